//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds the files it sees at compile
//! time but only watches files that already existed, not the directories.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

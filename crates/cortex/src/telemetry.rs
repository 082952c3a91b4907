//! Logging: `CORTEX_LOG` filter (default `info`), JSON lines when stderr is not a terminal, readable
//! text when it is. Logs go to stderr so stdout stays for command output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("CORTEX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.compact().init();
    } else {
        builder.json().flatten_event(true).with_current_span(true).init();
    }
}

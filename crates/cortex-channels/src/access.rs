//! The access-control steps of the inbound pipeline (SPEC §8.6 steps 5–7, §8.8): pairing codes, the
//! per-user rate limit, and the sentences a refused sender is told.
//!
//! - Pairing codes are 6 characters from a 31-character alphabet without look-alikes, drawn from the
//!   thread CSPRNG without modulo bias, valid 1 h, single use. A chat user redeems one with `/pair CODE`
//!   (any time) or by sending a bare code while they have no way in. Brute force is bounded twice: a
//!   sender gets [`PAIRING_USER_MAX_FAILURES`] wrong guesses per hour (then even a right code is refused
//!   until the hour is over), and every wrong guess aimed at an agent counts against each of its live
//!   codes, which stop working after [`cortex_store::channel_access::PAIRING_CODE_MAX_FAILURES`].
//! - The rate limit counts the sender's messages to the agent that went through in the window (the
//!   grant's own limit, else 20 per 60 s). A message over it is refused and nothing is queued for it;
//!   the first refusal of a window carries a "slow down" notice, later ones none.
//! - The token budget (`resource_limits.user_token_budget`, none by default) counts the tokens of the
//!   chat jobs the sender started with the agent over the last 24 h, from the jobs' own usage. A message
//!   once it is used up is refused with no job and told when to try again.
//! - A `read` grant admits with `read_only`: the router marks the chat job so, and the runtime refuses
//!   every tool call of it above p3 or with side effects (SPEC §8.8).

use cortex_core::agent::AccessMode;
use cortex_store::agents::Agent;
use cortex_store::channel_access::{
    NewAccessRequest, NewGrant, PairingCode, RATE_LIMITED_DETAIL, RecentMessages, UserRateLimit,
};
use cortex_store::{Store, StoreError, Tx};
use rand::Rng;
use uuid::Uuid;

use crate::router::reply_target;
use crate::types::Inbound;

/// The characters of a pairing code (no `I`, `L`, `O`, `0`, `1`).
pub const PAIRING_ALPHABET: &[u8; 31] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// Characters in a pairing code.
pub const PAIRING_CODE_LEN: usize = 6;
/// How long a pairing code stays redeemable.
pub const PAIRING_TTL: chrono::Duration = chrono::Duration::hours(1);
/// Fresh draws when a new code collides with a stored one.
const PAIRING_COLLISION_RETRIES: usize = 3;
/// Wrong pairing guesses a sender may make per hour.
pub const PAIRING_USER_MAX_FAILURES: i64 = 5;
/// The window of an agent's `user_token_budget` (tokens per chat user per day).
pub const USER_TOKEN_BUDGET_WINDOW: chrono::Duration = chrono::Duration::hours(24);
/// The inbound `detail` of a message refused for the sender's token budget.
pub const TOKEN_BUDGET_DETAIL: &str = "token budget exhausted";
/// The per-user limit when the grant sets none (SPEC §19 "chat-platform users 20/min").
pub const DEFAULT_USER_RATE_LIMIT: UserRateLimit = UserRateLimit { max_messages: 20, window_seconds: 60 };

pub(crate) const NOT_ALLOWLISTED: &str = "This bot only answers people an operator has allowed.";
const NO_ACCESS: &str = "You don't have access to this agent. Ask an operator to grant it.";
const GRANT_REVOKED: &str = "Your access to this agent was revoked. Ask an operator if you need it again.";
const GRANT_EXPIRED: &str = "Your access to this agent has expired. Ask an operator to renew it.";
const REQUEST_SUBMITTED: &str =
    "Your access request was submitted. You'll be able to chat once an operator approves it.";
const SLOW_DOWN: &str = "You're sending messages faster than this agent accepts. Please wait a minute.";
const PAIRED: &str = "Paired. You can chat with this agent now.";
const WRONG_CODE: &str = "That code is not valid. Check it and try again, or ask an operator for a new one.";
const LOCKED: &str = "Too many wrong codes. Please try again in an hour.";

/// The sentence an approved or denied access request is answered with in the user's chat.
pub fn decision_notice(approved: bool, reason: Option<&str>) -> String {
    match (approved, reason) {
        (true, _) => "Your access request was approved. You can chat with this agent now.".to_owned(),
        (false, Some(reason)) => format!("Your access request was declined: {reason}"),
        (false, None) => "Your access request was declined.".to_owned(),
    }
}

/// Who wrote, as the access steps see them.
pub(crate) struct Gate<'a> {
    pub channel_id: Uuid,
    pub message: &'a Inbound,
    pub user_id: Uuid,
    /// An operator (or above): admitted without a grant.
    pub trusted: bool,
    /// The chat is bound to this agent explicitly (not reached through the channel default).
    pub explicitly_bound: bool,
}

/// What the access steps decided.
pub(crate) enum Admission {
    /// Go on to commands and the chat job; `read_only`: the sender's grant is `read`, so the job may only
    /// use read-only tools (SPEC §8.8).
    Admitted { read_only: bool },
    /// A pairing code was redeemed: answer with this and stop.
    Paired(&'static str),
    /// Refused: the notice to send (none: say nothing) and the inbound row's `detail`.
    Refused { notice: Option<String>, detail: &'static str },
}

/// SPEC §8.6 steps 5–7 in the routing transaction: pairing, the access policy (grants, automatic
/// grants, access requests) and the per-user rate limit.
pub(crate) async fn admit(tx: &mut Tx, store: &Store, agent: &Agent, gate: &Gate<'_>) -> Result<Admission, StoreError> {
    let (user_id, message) = (gate.user_id, gate.message);
    let now = store.clock().now();
    let grant = store.grant(agent.id, user_id).await?;
    let usable = grant.as_ref().is_some_and(|grant| grant.is_usable(now));
    // Who reaches the agent without a grant gets one automatically; a revoked or expired grant stays in
    // force (the sender is told why).
    let automatic = match agent.access_mode {
        _ if grant.is_some() => None,
        AccessMode::Open => Some("open"),
        AccessMode::BoundChats if gate.explicitly_bound => Some("bound_chat"),
        _ => None,
    };
    let way_in = gate.trusted || usable || automatic.is_some();
    if let Some(code) = offered_code(&message.text, !way_in) {
        let attempt = PairingAttempt {
            channel_id: gate.channel_id,
            platform_user_id: &message.sender.platform_user_id,
            user_id,
            agent_id: agent.id,
        };
        let pairing = redeem(tx, &attempt, &code).await?;
        return Ok(match pairing {
            Pairing::Paired => Admission::Paired(pairing.reply()),
            Pairing::Wrong | Pairing::Locked => {
                Admission::Refused { notice: Some(pairing.reply().into()), detail: "pairing code refused" }
            }
        });
    }
    if !gate.trusted && !usable {
        if let Some(origin) = automatic {
            let new = NewGrant {
                agent_id: agent.id,
                user_id,
                access: "write".into(),
                origin: origin.into(),
                expires_at: None,
                rate_limit: None,
            };
            tx.upsert_grant(&new).await?;
        } else if let Some(grant) = &grant {
            let notice = if grant.is_expired(now) { GRANT_EXPIRED } else { GRANT_REVOKED };
            return Ok(Admission::Refused { notice: Some(notice.into()), detail: "grant revoked or expired" });
        } else if agent.access_mode == AccessMode::ApprovalQueue {
            let request = NewAccessRequest {
                agent_id: agent.id,
                user_id,
                channel_id: gate.channel_id,
                chat_id: message.chat.chat_id.clone(),
                reply_target: reply_target(&message.chat, Some(&message.platform_message_id)),
                message_preview: message.text.chars().take(200).collect(),
            };
            // The "request submitted" notice goes out once per request.
            let filed = tx.request_access(&request).await?;
            let notice = filed.then(|| REQUEST_SUBMITTED.into());
            return Ok(Admission::Refused { notice, detail: "access requested" });
        } else {
            return Ok(Admission::Refused { notice: Some(NO_ACCESS.into()), detail: "no grant" });
        }
    }
    let grant = grant.filter(|grant| grant.is_usable(now));
    // Operators use the agent fully whatever their grant says.
    let read_only = !gate.trusted && grant.as_ref().is_some_and(|grant| grant.access == "read");
    let limit = grant.and_then(|grant| grant.rate_limit.map(|limit| limit.0));
    if let Some(notify) = over_limit(tx, store, limit, user_id, agent.id).await? {
        return Ok(Admission::Refused { notice: notify.then(|| SLOW_DOWN.into()), detail: RATE_LIMITED_DETAIL });
    }
    if let Some(wait) = over_token_budget(tx, store, agent, user_id).await? {
        return Ok(Admission::Refused { notice: Some(budget_notice(wait)), detail: TOKEN_BUDGET_DETAIL });
    }
    Ok(Admission::Admitted { read_only })
}

/// When the sender's chat jobs with the agent used up its `user_token_budget` over the last
/// [`USER_TOKEN_BUDGET_WINDOW`]: how long until the oldest of them leaves the window (the earliest the
/// sender can get an answer again). `None` when the agent sets no budget or some is left.
async fn over_token_budget(
    tx: &mut Tx,
    store: &Store,
    agent: &Agent,
    user_id: Uuid,
) -> Result<Option<chrono::Duration>, StoreError> {
    let Some(budget) = agent.resource_limits.user_token_budget else { return Ok(None) };
    let now = store.clock().now();
    let (used, oldest) = tx.user_tokens_since(user_id, agent.id, now - USER_TOKEN_BUDGET_WINDOW).await?;
    if u64::try_from(used).unwrap_or(0) < budget {
        return Ok(None);
    }
    let frees_at = oldest.map_or(now + USER_TOKEN_BUDGET_WINDOW, |oldest| oldest + USER_TOKEN_BUDGET_WINDOW);
    Ok(Some(frees_at - now))
}

/// The sentence a sender over their token budget is told: when to try again, in minutes (or hours).
fn budget_notice(wait: chrono::Duration) -> String {
    let minutes = ((wait.num_seconds() + 59) / 60).max(1);
    let when = if minutes > 90 { format!("{} hours", (minutes + 59) / 60) } else { format!("{minutes} minutes") };
    format!("You've reached your usage limit with this agent for now. Please try again in {when}.")
}

/// A new pairing code.
pub fn new_pairing_code() -> String {
    let mut rng = rand::rng();
    (0..PAIRING_CODE_LEN).map(|_| PAIRING_ALPHABET[rng.random_range(0..PAIRING_ALPHABET.len())] as char).collect()
}

/// Stores a new code for `agent_id`, drawing again on a collision (at most three times).
pub async fn create_pairing_code(
    store: &Store,
    agent_id: Uuid,
    access: &str,
    created_by: &str,
) -> Result<PairingCode, StoreError> {
    let expires_at = store.clock().now() + PAIRING_TTL;
    let mut tx = store.begin().await?;
    for _ in 0..=PAIRING_COLLISION_RETRIES {
        if let Some(code) =
            tx.insert_pairing_code(agent_id, &new_pairing_code(), access, created_by, expires_at).await?
        {
            tx.commit().await?;
            return Ok(code);
        }
    }
    Err(StoreError::Conflict { constraint: "pairing_code.code".into() })
}

/// The code a message offers, upper-cased: `/pair CODE` always, a bare code only when `bare` (the
/// sender has no way in otherwise, so an ordinary six-letter word never counts as a guess).
fn offered_code(text: &str, bare: bool) -> Option<String> {
    let mut words = text.split_whitespace();
    let first = words.next()?;
    let command = first.split('@').next().unwrap_or(first);
    if command.eq_ignore_ascii_case("/pair") {
        return Some(words.next().unwrap_or_default().to_ascii_uppercase());
    }
    let candidate = first.to_ascii_uppercase();
    let is_code = candidate.len() == PAIRING_CODE_LEN && candidate.bytes().all(|b| PAIRING_ALPHABET.contains(&b));
    (bare && words.next().is_none() && is_code).then_some(candidate)
}

/// What a pairing attempt led to, and what the sender is told.
enum Pairing {
    /// The code was live: the sender now holds a grant.
    Paired,
    /// Not a live code of this agent (counted).
    Wrong,
    /// The sender used up their wrong guesses for the hour; the code was not even looked at.
    Locked,
}

impl Pairing {
    fn reply(&self) -> &'static str {
        match self {
            Pairing::Paired => PAIRED,
            Pairing::Wrong => WRONG_CODE,
            Pairing::Locked => LOCKED,
        }
    }
}

/// Who offers a code, and to which agent.
struct PairingAttempt<'a> {
    channel_id: Uuid,
    platform_user_id: &'a str,
    user_id: Uuid,
    agent_id: Uuid,
}

/// Redeems `code` for the sender in the routing transaction: one guarded update, then the grant
/// (origin `pairing`, also over a revoked one). A wrong code is counted against the sender and against
/// the agent's live codes.
async fn redeem(tx: &mut Tx, attempt: &PairingAttempt<'_>, code: &str) -> Result<Pairing, StoreError> {
    if tx.pairing_failures(attempt.channel_id, attempt.platform_user_id).await? >= PAIRING_USER_MAX_FAILURES {
        return Ok(Pairing::Locked);
    }
    match tx.redeem_pairing_code(attempt.agent_id, code, attempt.user_id).await? {
        Some(access) => {
            tx.upsert_grant(&NewGrant {
                agent_id: attempt.agent_id,
                user_id: attempt.user_id,
                access,
                origin: "pairing".into(),
                expires_at: None,
                rate_limit: None,
            })
            .await?;
            Ok(Pairing::Paired)
        }
        None => {
            tx.pairing_failed(attempt.channel_id, attempt.platform_user_id, attempt.agent_id).await?;
            Ok(Pairing::Wrong)
        }
    }
}

/// Whether the sender is over their limit with this message: `None` when it may pass, `Some(notify)`
/// when it is refused (`notify`: the first refusal of the window, which says "slow down").
async fn over_limit(
    tx: &mut Tx,
    store: &Store,
    limit: Option<UserRateLimit>,
    user_id: Uuid,
    agent_id: Uuid,
) -> Result<Option<bool>, StoreError> {
    let limit = limit.unwrap_or(DEFAULT_USER_RATE_LIMIT);
    let since = store.clock().now() - chrono::Duration::seconds(i64::from(limit.window_seconds));
    let RecentMessages { routed, limited } = tx.recent_messages(user_id, agent_id, since).await?;
    Ok((routed >= i64::from(limit.max_messages)).then_some(limited == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_codes_are_six_characters_of_the_alphabet() {
        for _ in 0..200 {
            let code = new_pairing_code();
            assert_eq!(code.len(), PAIRING_CODE_LEN);
            assert!(code.bytes().all(|b| PAIRING_ALPHABET.contains(&b)), "{code}");
        }
    }

    #[test]
    fn a_code_is_offered_by_pair_or_bare_only_when_allowed() {
        assert_eq!(offered_code("/pair abc234", false).as_deref(), Some("ABC234"));
        assert_eq!(offered_code("/pair@bot ABC234", false).as_deref(), Some("ABC234"));
        assert_eq!(offered_code("/pair", false).as_deref(), Some(""));
        assert_eq!(offered_code("abc234", true).as_deref(), Some("ABC234"));
        assert_eq!(offered_code("abc234", false), None);
        assert_eq!(offered_code("thanks a lot", true), None);
        assert_eq!(offered_code("hello1", true), None, "1 is not in the alphabet");
        assert_eq!(offered_code("/help", true), None);
    }
}

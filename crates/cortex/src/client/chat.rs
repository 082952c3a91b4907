//! `cortex chat <agent> ["text"]`: sends a message and prints the reply token by token as the job's
//! event stream delivers it. Without text it reads lines interactively, continuing one session.

use std::io::{BufRead, Write};

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Api, ClientArgs, ClientError};

/// How a chat turn ended.
enum TurnEnd {
    Completed,
    WaitingForApproval(String),
    Failed(String),
}

pub async fn run(args: &ClientArgs, agent: &str, text: Option<String>) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    match text {
        Some(text) => finish(turn(&api, agent, &text, None).await?.1),
        None => interactive(&api, agent).await,
    }
}

fn finish(end: TurnEnd) -> anyhow::Result<()> {
    match end {
        TurnEnd::Completed => Ok(()),
        TurnEnd::WaitingForApproval(id) => Err(anyhow::anyhow!(ClientError {
            exit_code: 3,
            message: format!("waiting for approval {id} (decide with `cortex approvals approve {id}`)"),
        })),
        TurnEnd::Failed(message) => Err(anyhow::anyhow!(ClientError { exit_code: 1, message })),
    }
}

async fn interactive(api: &Api, agent: &str) -> anyhow::Result<()> {
    let mut session: Option<String> = None;
    let stdin = std::io::stdin();
    loop {
        eprint!("you> ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(());
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if matches!(text, "/exit" | "/quit") {
            return Ok(());
        }
        let (session_id, end) = turn(api, agent, text, session.as_deref()).await?;
        session = Some(session_id);
        match end {
            TurnEnd::Completed => {}
            TurnEnd::WaitingForApproval(id) => eprintln!("[waiting for approval {id}]"),
            TurnEnd::Failed(message) => eprintln!("[failed: {message}]"),
        }
    }
}

/// Posts one message and follows its job until it ends; returns the session id and the outcome.
async fn turn(api: &Api, agent: &str, text: &str, session: Option<&str>) -> anyhow::Result<(String, TurnEnd)> {
    let mut body = json!({"text": text});
    if let Some(session) = session {
        body["session_id"] = json!(session);
    }
    let accepted: Value = api.post(&format!("/agents/{agent}/chat"), &body).await?;
    let job_id = accepted["job_id"].as_str().unwrap_or_default().to_owned();
    let session_id = accepted["session_id"].as_str().unwrap_or_default().to_owned();
    let end = follow(api, &job_id).await?;
    Ok((session_id, end))
}

/// Reads the job's SSE stream, printing text deltas; reconnects with `Last-Event-ID` if it drops.
async fn follow(api: &Api, job_id: &str) -> anyhow::Result<TurnEnd> {
    let mut last_id: Option<String> = None;
    let mut printed_any = false;
    let mut stdout = std::io::stdout();
    loop {
        let mut request = api.request(Method::GET, &format!("/jobs/{job_id}/events"));
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.map_err(|err| api.unreachable(err))?;
        if !response.status().is_success() {
            let status = response.status();
            return Err(anyhow::anyhow!(ClientError {
                exit_code: 1,
                message: format!("cannot follow job {job_id}: {status}")
            }));
        }
        let mut bytes = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.map_err(|err| api.unreachable(err))?;
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let Some(event) = parse_frame(&frame) else { continue };
                last_id = event.id.clone().or(last_id);
                let data = &event.data["data"];
                match event.kind.as_str() {
                    "llm.delta" => {
                        if let Some(text) = data["text"].as_str() {
                            print!("{}", super::output::escape(text, true));
                            let _ = stdout.flush();
                            printed_any = true;
                        }
                    }
                    "approval.requested" => {
                        if printed_any {
                            println!();
                        }
                        return Ok(TurnEnd::WaitingForApproval(
                            data["approval_id"].as_str().unwrap_or_default().to_owned(),
                        ));
                    }
                    "job.completed" => {
                        let response = data["result"]["response"].as_str().unwrap_or_default();
                        if printed_any {
                            println!();
                        } else {
                            println!("{}", super::output::escape(response, true));
                        }
                        return Ok(TurnEnd::Completed);
                    }
                    "job.failed" => {
                        if printed_any {
                            println!();
                        }
                        let error = &data["error"];
                        let message = format!(
                            "{}/{}: {}",
                            error["class"].as_str().unwrap_or("unknown"),
                            error["code"].as_str().unwrap_or("error"),
                            error["message"].as_str().unwrap_or("")
                        );
                        return Ok(TurnEnd::Failed(super::output::escape(&message, true)));
                    }
                    _ => {}
                }
            }
        }
        // The stream ended without a terminal event (server restart): resume after the last event seen.
    }
}

struct Frame {
    id: Option<String>,
    kind: String,
    data: Value,
}

fn parse_frame(frame: &str) -> Option<Frame> {
    let (mut id, mut kind, mut data) = (None, None, None);
    for line in frame.lines() {
        if let Some(value) = line.strip_prefix("id:") {
            id = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("event:") {
            kind = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("data:") {
            data = serde_json::from_str(value.trim()).ok();
        }
    }
    Some(Frame { id, kind: kind?, data: data.unwrap_or(Value::Null) })
}

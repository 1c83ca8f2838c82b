//! One input line through the ledger: skip, report, verify or send (module docs of
//! [`crate::push`]).

use tracing::{info, warn};

use super::ledger::{Entry, Ledger, LedgerError, State};
use super::send::{self, Answer, Found, Target};
use super::validate::Prepared;
use super::{LineResult, Status};

/// Why the push cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The ledger cannot be written: nothing more may be sent.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A failure that makes every further request pointless (no token, 401).
    #[error(transparent)]
    Fhir(#[from] fhirsync_fhir::Error),
}

/// What happened to one line, and whether the push must stop after it.
#[derive(Debug)]
pub struct Step {
    /// The line's result.
    pub result: LineResult,
    /// The server gave no definitive answer: stop sending (the rest is left for the next run).
    pub stop: bool,
}

impl Step {
    fn go(result: LineResult) -> Self {
        Step { result, stop: false }
    }
}

/// Takes `item` through the ledger: see [`crate::push`], step 3 and 4.
pub async fn push_line(
    target: Target<'_>,
    ledger: &mut Ledger,
    item: &Prepared,
    retry_pending: bool,
) -> Result<Step, GuardError> {
    let ty = target.resource_type;
    let base = LineResult::new(item.line, Status::AlreadyFiled, item.notes.clone());
    match ledger.get(&item.hash).cloned() {
        Some(Entry { state: State::Done, id }) => {
            Ok(Step::go(base.with_id(id).with_note("filed by an earlier push (ledger)")))
        }
        Some(Entry { state: State::Duplicate, .. }) => Ok(Step::go(
            base.with_note("refused as a duplicate (59141) by an earlier push: already on the chart"),
        )),
        Some(Entry { state: State::Pending, id }) if !retry_pending => {
            let error = match &id {
                Some(_) => "sent by an earlier push; the server answered with this id, then the answer broke off \
                            and it could not be read back: it is probably on the server; not re-sent. Rerun with \
                            --retry-pending to read it (re-sent only if it is gone)"
                    .to_string(),
                None => "sent by an earlier push that got no definitive answer: it may be on the server; not \
                         re-sent. Check the server; if it is not there, rerun with --retry-pending to re-send it \
                         (if it is, remove the line from the file)"
                    .to_string(),
            };
            Ok(Step::go(
                LineResult::new(item.line, Status::Pending, item.notes.clone()).with_id(id).with_error(error),
            ))
        }
        Some(Entry { state: State::Pending, id: Some(id) }) => match send::read_back(target, &id).await? {
            Found::Exists => {
                ledger.record(&item.hash, State::Done, Some(&id))?;
                info!(line = item.line, "Pending create confirmed by a read.");
                Ok(Step::go(
                    base.with_id(Some(id.clone()))
                        .with_note(format!("pending; confirmed by reading {ty}/{id}")),
                ))
            }
            Found::Gone => {
                info!(line = item.line, "Pending create is not on the server; re-sending.");
                send_line(
                    target,
                    ledger,
                    item,
                    Some(format!("pending; {ty}/{id} is not on the server: re-sent")),
                )
                .await
            }
            Found::Unknown(why) => Ok(Step::go(
                LineResult::new(item.line, Status::Pending, item.notes.clone())
                    .with_id(Some(id.clone()))
                    .with_error(format!(
                        "pending; reading {ty}/{id} to verify it failed ({why}): not re-sent"
                    )),
            )),
        },
        Some(Entry { state: State::Pending, id: None }) => {
            send_line(target, ledger, item, Some("pending without an id; re-sent (--retry-pending)".into()))
                .await
        }
        Some(Entry { state: State::Failed, .. }) | None => send_line(target, ledger, item, None).await,
    }
}

/// Records `pending`, sends, records the answer.
async fn send_line(
    target: Target<'_>,
    ledger: &mut Ledger,
    item: &Prepared,
    note: Option<String>,
) -> Result<Step, GuardError> {
    let ty = target.resource_type;
    let mut notes = item.notes.clone();
    notes.extend(note);
    let result = |status| LineResult::new(item.line, status, notes.clone());
    ledger.record(&item.hash, State::Pending, None)?;
    let answer = match send::post(target, item).await {
        Ok(a) => a,
        Err(e) => {
            // No token, or 401 after a fresh one: the server did not process it.
            ledger.record(&item.hash, State::Failed, None)?;
            return Err(e.into());
        }
    };
    match answer {
        Answer::Created(id) => {
            ledger.record(&item.hash, State::Done, id.as_deref())?;
            info!(line = item.line, "Resource created.");
            let r = result(Status::Created).with_id(id.clone());
            Ok(Step::go(if id.is_none() { r.with_note("the server sent no Location") } else { r }))
        }
        Answer::Duplicate(text) => {
            ledger.record(&item.hash, State::Duplicate, None)?;
            info!(line = item.line, "Create refused as a duplicate (59141).");
            Ok(Step::go(result(Status::Duplicate).with_error(text)))
        }
        Answer::Refused(text) => {
            ledger.record(&item.hash, State::Failed, None)?;
            info!(line = item.line, "Create refused.");
            Ok(Step::go(result(Status::Failed).with_error(text)))
        }
        Answer::Cut { id, why } => {
            ledger.record(&item.hash, State::Pending, Some(&id))?;
            warn!(line = item.line, error = %why, "Create answer broke off after its Location; reading the id.");
            match send::read_back(target, &id).await? {
                Found::Exists => {
                    ledger.record(&item.hash, State::Done, Some(&id))?;
                    Ok(Step::go(
                        result(Status::Created).with_id(Some(id.clone())).with_note(format!(
                            "the answer broke off ({why}); confirmed by reading {ty}/{id}"
                        )),
                    ))
                }
                found => {
                    let read = match found {
                        Found::Unknown(e) => format!("reading it failed: {e}"),
                        _ => "a read does not find it yet".to_string(),
                    };
                    Ok(Step {
                        result: result(Status::Pending).with_id(Some(id.clone())).with_error(format!(
                            "the server answered with {ty}/{id}, then the answer broke off ({why}); {read}. \
                             Rerun with --retry-pending to verify it"
                        )),
                        stop: true,
                    })
                }
            }
        }
        Answer::Unacknowledged(why) => {
            warn!(line = item.line, error = %why, "Create not acknowledged; left pending, push stops.");
            Ok(Step {
                result: result(Status::Pending).with_error(format!(
                    "no definitive answer ({why}): it may be on the server; not re-sent. Check the server, \
                     then rerun with --retry-pending to re-send it"
                )),
                stop: true,
            })
        }
    }
}

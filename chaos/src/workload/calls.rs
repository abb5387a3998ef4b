//! One recorded call to a node (Append, GetOrder): the invoke, then ok, fail (it surely did
//! not happen) or info (its outcome is unknown), as the checker reads them.

use pos_hub::proto::{convert, pb};
use tonic::Code;

use super::{OP_TIMEOUT, Workload};
use crate::history::{Answer, Call, Entry, Reply, Sent, Status};

impl Workload {
    /// Appends `events` through `node`, recording the call and its answer. Returns the
    /// answers, or `None` when the outcome is unknown or the call definitely failed.
    pub(super) async fn append(
        &self,
        process: u32,
        node: u64,
        events: Vec<pos_hub::domain::Event>,
    ) -> Option<Vec<Answer>> {
        let op = self.recorder.next_op();
        let sent: Vec<Sent> = events
            .iter()
            .map(|e| Sent {
                id: e.event_id.clone(),
                aggregate: format!("{}/{}", e.aggregate_type, e.aggregate_id),
                version: e.version,
                event_type: e.event_type.clone(),
                device: e.actor.device_id.clone(),
            })
            .collect();
        let pb_events: Result<Vec<pb::Event>, _> =
            events.iter().map(convert::event_to_pb).collect();
        self.recorder.record(Entry::Invoke {
            op,
            process,
            t: self.recorder.now(),
            node,
            call: Call::Append { events: sent },
        });
        let pb_events = match pb_events {
            Ok(events) => events,
            Err(err) => {
                self.recorder.record(Entry::Fail {
                    op,
                    t: self.recorder.now(),
                    error: format!("not sent: {err}"),
                });
                return None;
            }
        };
        let mut client = self.client(node);
        let call = client.append(pb::AppendRequest { events: pb_events });
        match tokio::time::timeout(OP_TIMEOUT, call).await {
            Ok(Ok(reply)) => {
                let answers: Vec<Answer> = reply
                    .into_inner()
                    .results
                    .into_iter()
                    .map(|r| Answer {
                        id: r.event_id,
                        status: match pb::AppendStatus::try_from(r.status) {
                            Ok(pb::AppendStatus::Accepted) => Status::Accepted,
                            Ok(pb::AppendStatus::Duplicate) => Status::Duplicate,
                            _ => Status::Rejected,
                        },
                        seq: r.seq,
                        code: r.code,
                    })
                    .collect();
                self.recorder.record(Entry::Ok {
                    op,
                    t: self.recorder.now(),
                    reply: Reply::Append {
                        answers: answers.clone(),
                    },
                });
                Some(answers)
            }
            Ok(Err(status)) if definite(status.code()) => {
                self.recorder.record(Entry::Fail {
                    op,
                    t: self.recorder.now(),
                    error: format!("{:?}: {}", status.code(), status.message()),
                });
                None
            }
            Ok(Err(status)) => {
                self.recorder.record(Entry::Info {
                    op,
                    t: self.recorder.now(),
                    error: format!("{:?}: {}", status.code(), status.message()),
                });
                None
            }
            Err(_) => {
                self.recorder.record(Entry::Info {
                    op,
                    t: self.recorder.now(),
                    error: format!("no answer within {OP_TIMEOUT:?}"),
                });
                None
            }
        }
    }

    /// Reads an order; returns its version (0: not found) when the read succeeded.
    pub(super) async fn read(
        &self,
        process: u32,
        node: u64,
        order: &str,
        linearizable: bool,
    ) -> Option<u64> {
        let op = self.recorder.next_op();
        self.recorder.record(Entry::Invoke {
            op,
            process,
            t: self.recorder.now(),
            node,
            call: Call::Read {
                order: order.to_owned(),
                linearizable,
            },
        });
        let request = pos_hub::proto::convert::get_order_request(order, linearizable);
        let mut client = self.client(node);
        let reply = tokio::time::timeout(OP_TIMEOUT, client.get_order(request)).await;
        let (version, last_seq) = match reply {
            Ok(Ok(reply)) => match reply.into_inner().order {
                Some(o) => (o.version, o.last_seq),
                None => (0, 0),
            },
            Ok(Err(status)) if status.code() == Code::NotFound => (0, 0),
            Ok(Err(status)) => {
                self.recorder.record(Entry::Fail {
                    op,
                    t: self.recorder.now(),
                    error: format!("{:?}: {}", status.code(), status.message()),
                });
                return None;
            }
            Err(_) => {
                self.recorder.record(Entry::Info {
                    op,
                    t: self.recorder.now(),
                    error: "timeout".into(),
                });
                return None;
            }
        };
        self.recorder.record(Entry::Ok {
            op,
            t: self.recorder.now(),
            reply: Reply::Read { version, last_seq },
        });
        Some(version)
    }
}

/// Codes by which the hub refuses a call before anything is proposed.
fn definite(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated | Code::NotFound
    )
}

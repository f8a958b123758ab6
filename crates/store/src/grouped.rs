//! Reads that many requests share: the facts of the member an event names (read before every
//! event, for its earning rules) and members' balances. One thread takes every such request
//! waiting (up to [`GROUP`]), answers each tenant's with one query per kind (facts by id, by
//! external id, balances) and answers each request. Under load the requests of many
//! connections wait together while the previous query runs, so the database answers one
//! query where it answered one per request; alone, a request is read at once, as by any
//! reader. Used on PostgreSQL, where every read is a round trip to a server process (about
//! 120 µs of its CPU each on two cores, most of it the round trip itself); on SQLite a read
//! costs no round trip and it measured the same either way (docs/PERFORMANCE.md).

use crate::conn::Conn;
use crate::error::Result;
use crate::model::Balance;
use crate::runtime::Backend;
use crossbeam_channel::Receiver;
use fidelis_core::ProgramSettings;
use fidelis_core::earn::MemberFacts;
use fidelis_core::event::MemberKey;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Requests one round answers at most.
pub(crate) const GROUP: usize = 256;

/// A request, in its tenant.
pub(crate) struct GroupedJob {
    pub tenant: String,
    pub read: Grouped,
}

pub(crate) enum Grouped {
    /// What earning may know of the member an event names (None: not enrolled).
    Facts {
        key: MemberKey,
        reply: oneshot::Sender<Result<Option<MemberFacts>>>,
    },
    /// A member's balance with the points that expire next.
    Balance {
        member: String,
        settings: Box<ProgramSettings>,
        reply: oneshot::Sender<Result<Balance>>,
    },
}

pub(crate) fn grouped_loop(
    mut conn: Box<dyn Conn>,
    backend: &Arc<dyn Backend>,
    rx: Receiver<GroupedJob>,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        crate::runtime::revive(&mut conn, backend, true);
        while let Some(tenant) = jobs.first().map(|j| j.tenant.clone()) {
            let (mine, rest): (Vec<GroupedJob>, Vec<GroupedJob>) =
                jobs.into_iter().partition(|j| j.tenant == tenant);
            jobs = rest;
            answer(
                conn.as_mut(),
                &tenant,
                mine.into_iter().map(|j| j.read).collect(),
            );
        }
    }
}

/// The distinct keys `pick` finds in `reads`, as a query's key list.
fn keys<'a>(
    reads: &'a [Grouped],
    pick: impl Fn(&'a Grouped) -> Option<&'a str>,
) -> Vec<Option<&'a str>> {
    let mut seen = HashSet::new();
    reads
        .iter()
        .filter_map(pick)
        .filter(|k| seen.insert(*k))
        .map(Some)
        .collect()
}

/// Answers one tenant's requests: one query per kind of read present.
fn answer(c: &mut dyn Conn, tenant: &str, reads: Vec<Grouped>) {
    let by_id = keys(&reads, |r| match r {
        Grouped::Facts {
            key: MemberKey::Id(k),
            ..
        } => Some(k),
        _ => None,
    });
    let by_ext = keys(&reads, |r| match r {
        Grouped::Facts {
            key: MemberKey::ExternalId(k),
            ..
        } => Some(k),
        _ => None,
    });
    let balances = keys(&reads, |r| match r {
        Grouped::Balance { member, .. } => Some(member),
        _ => None,
    });
    let facts = |c: &mut dyn Conn, column: &str, keys: &[Option<&str>]| {
        if keys.is_empty() {
            Ok(HashMap::new())
        } else {
            crate::members::facts_of_many(c, tenant, column, keys)
        }
    };
    let facts_by_id = facts(c, "id", &by_id);
    let facts_by_ext = facts(c, "external_id", &by_ext);
    let balance_rows = if balances.is_empty() {
        Ok(HashMap::new())
    } else {
        crate::ledger::balance_rows(c, tenant, &balances)
    };
    for read in reads {
        match read {
            Grouped::Facts { key, reply } => {
                let (found, k) = match &key {
                    MemberKey::Id(k) => (&facts_by_id, k),
                    MemberKey::ExternalId(k) => (&facts_by_ext, k),
                };
                let _ = reply.send(
                    found
                        .as_ref()
                        .map(|m| m.get(k).cloned())
                        .map_err(Clone::clone),
                );
            }
            Grouped::Balance {
                member,
                settings,
                reply,
            } => {
                let answer = match &balance_rows {
                    Err(e) => Err(e.clone()),
                    Ok(rows) => match rows.get(&member) {
                        None => Err(crate::error::StoreError::NotFound(format!(
                            "member `{member}`"
                        ))),
                        Some(row) => crate::ledger::balance_of(c, tenant, &member, row, &settings),
                    },
                };
                let _ = reply.send(answer);
            }
        }
    }
}

//! Fidelis storage. The ledger's SQL is written once, over [`Conn`], a small connection trait
//! that SQLite (`fidelis-store-sqlite`) and PostgreSQL (`fidelis-store-pg`) implement; the
//! domain decisions come from `fidelis-core`. Writes run on writer threads that gather
//! concurrent requests into one transaction (group commit, one savepoint per request) and
//! answer only after the commit; reads run on a pool of reader threads.
//!
//! Start at [`Store`]: its methods are the storage operations in domain terms.

mod api;
pub mod awards;
pub mod conn;
pub mod credit;
pub mod dashboard;
pub mod error;
mod events;
mod fence;
mod grouped;
mod idem;
mod jobs;
mod ledger;
mod member_value;
pub mod members;
pub mod membership;
pub mod model;
pub mod rewards;
pub mod rules;
pub mod runtime;
pub mod schema;
pub mod tenancy;
pub mod tiers;
mod together;
pub mod transfers;
mod verify;
pub mod web;

pub use conn::{Conn, DbError, DbErrorKind, Dialect, Param, Row, Value};
pub use error::StoreError;
pub use idem::IdemKey;
#[doc(hidden)]
pub use jobs::EXPIRY_DUE_LOTS;
pub use ledger::MAX_PAGE;
#[doc(hidden)]
pub use ledger::expiring_from_lots_sql;
pub use ledger::{DEBIT_HEAD, open_lots_end_sql};
pub use members::LookupBy;
pub use runtime::{Backend, Store, StoreOptions};
pub use tenancy::hash_key;
pub use verify::VerifyReport;

/// A random identifier: `prefix` then `chars` characters of an alphabet without look-alikes
/// (about 5 bits each), from the operating system's generator.
pub fn random_id(prefix: &str, chars: usize) -> String {
    use rand::Rng;
    // 31 symbols (about 4.95 bits each): no 0/o, 1/l/i look-alikes.
    const ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
    let mut rng = rand::rng();
    let mut s = String::with_capacity(prefix.len() + chars);
    s.push_str(prefix);
    for _ in 0..chars {
        s.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    s
}

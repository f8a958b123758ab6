//! The pure domain of Fidelis: money and currencies, programme settings, base earning, and the
//! ledger's planning (which lots a debit consumes, how a refund claws back). Nothing here reads a
//! clock, a database or the network: callers pass `now` and the state they loaded.

pub mod credit;
pub mod earn;
pub mod event;
pub mod ledger;
pub mod membership;
pub mod money;
pub mod program;
pub mod rewards;
pub mod rules;
pub mod tiers;
pub mod time;
pub mod transfers;

pub use money::{Currency, Money, MoneyError};
pub use program::ProgramSettings;

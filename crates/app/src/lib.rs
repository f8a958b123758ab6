//! Fidelis use cases, apart from HTTP: who is calling (keys and scopes), what they may do, the
//! checks on their input, and the calls into the store. Handlers parse, call one method of
//! [`App`], and map its result; this crate knows no status codes.

mod cache;
mod clock;
pub mod console;
pub mod earners;
mod error;
pub mod guard;
mod inputs;
pub mod portal;
pub mod rewards;
pub mod rules;
pub mod secrets;
mod service;
pub mod value;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::AppError;
pub use inputs::{AdjustmentInput, ConsentInput, MAX_ADJUSTMENT_POINTS, MemberInput};
pub use service::{App, Principal, Scope};

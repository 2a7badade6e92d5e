//! redis-ql: any number of identical copies, coordinated only through Redis.
//! One copy at a time is the elected generator; all the others process each
//! message exactly once. The binary `app` only parses its command line and
//! calls [`copy::run`], [`drain::run`] or [`status::show`].
//!
//! Public are the modules a program (the binary, the tests, the checker, the
//! benchmark) drives or inspects; the tasks of a running copy are private.

pub mod cli;
pub mod connection;
pub mod copy;
pub mod dashboard;
pub mod dead;
pub mod drain;
pub mod error;
pub mod escape;
pub mod http;
pub mod janitor;
pub mod keys;
pub mod message;
pub mod metrics;
pub mod options;
pub mod scripts;
pub mod settings;
pub mod status;
pub mod tls;

mod backoff;
mod generator;
mod lease;
mod membership;

mod processor;
mod sync;

pub use connection::Redis;
pub use error::Error;
pub use keys::Keys;
pub use settings::{CommandSettings, Settings};

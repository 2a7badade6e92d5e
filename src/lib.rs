//! redis-ql: any number of identical copies, coordinated only through Redis.
//! One copy at a time is the elected generator; all the others process each
//! message exactly once. The binary `app` only parses its command line and
//! calls [`copy::run`], [`drain::run`] or [`status::show`].

pub mod backoff;
pub mod cli;
pub mod connection;
pub mod copy;
pub mod drain;
pub mod error;
pub mod escape;
pub mod generator;
pub mod janitor;
pub mod keys;
pub mod lease;
pub mod membership;
pub mod message;
pub mod options;
pub mod processor;
pub mod scripts;
pub mod settings;
pub mod status;
mod sync;

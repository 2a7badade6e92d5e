//! The integration tests: one binary, one module per subject, all on the
//! harness of the `testkit` crate (a real `redis-server` on a free port, the
//! real `app` binary). Tests that start copies and time them take
//! `testkit::serial()`, so that on two cores one test's copies never slow
//! another's; the rest run beside them.
//!
//! `cargo test --test suite` runs them all; `cargo test --test suite chaos`
//! one module.

mod acl;
mod browser;
mod chaos;
mod cli;
mod cluster;
mod container;
mod dashboard;
mod dead;
mod durability;
mod edges;
mod failures;
mod hostile;
mod http;
mod in_process;
mod measure;
mod processes;
mod scripts;
mod sentinel;
mod tls;

//! rivulet: an embeddable event log.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod error;
pub mod storage;

pub use config::{Fsync, LogConfig};
pub use error::{BatchError, Error, Result};

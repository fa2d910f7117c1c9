//! Warren's wire protocol: everything between bytes on a socket and typed AMQP 0-9-1
//! commands, with no I/O and no async.
//!
//! - [`frame`]: frame headers (checked against `frame_max` before a payload is buffered),
//!   frame decoding from a read buffer and frame encoding into a write buffer;
//! - [`method`]: method payload decoding (with the class and method ids peeked first, so
//!   every error names the method) and encoding of the methods the server sends;
//! - [`table`]: a bounded walker over field tables that rejects nesting deeper than
//!   [`table::MAX_TABLE_DEPTH`] before `amq-protocol`'s recursive parser sees them;
//! - [`properties`]: an allocation-free view of a content header's basic properties;
//! - [`content`]: the method → header → body assembly state machine;
//! - [`sasl`]: PLAIN and AMQPLAIN responses;
//! - [`tune`]: `connection.tune` negotiation;
//! - [`error`]: [`AmqpError`], a reply code with its scope, the failing method and a text;
//! - `fuzz_harness` (hidden): the bodies of the `cargo fuzz` targets in `protocol/fuzz`,
//!   shared with the corpus replay test `tests/fuzz_corpus.rs`.
//!
//! The broker (crate `warren`) owns sockets and state; this crate is unit-tested, fuzzable
//! and benchmarkable on its own.

pub mod content;
pub mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzz_harness;
pub mod method;
pub mod properties;
pub mod sasl;
pub mod table;
pub mod tune;

pub use amq_protocol::protocol::{self as spec, AMQPClass};
pub use amq_protocol::types;
pub use error::{AmqpError, ReplyCode, Scope};
pub use frame::{Frame, FrameHeader, FrameType};

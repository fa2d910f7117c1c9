//! Typed AMQP errors: a reply code, whether it closes the channel or the connection, the
//! class and method that caused it, and a human-readable text.
//!
//! Every failure the broker reports to a client is an [`AmqpError`]; the connection turns it
//! into `channel.close` or `connection.close` in exactly one place.

use std::fmt;

/// The reply codes of AMQP 0-9-1 (section 1.4.2 of the spec, plus RabbitMQ's usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ReplyCode {
    /// 200: normal completion.
    ReplySuccess = 200,
    /// 311: content too large (channel).
    ContentTooLarge = 311,
    /// 312: mandatory message could not be routed (basic.return).
    NoRoute = 312,
    /// 313: immediate message had no consumer (basic.return).
    NoConsumers = 313,
    /// 320: an operator closed the connection.
    ConnectionForced = 320,
    /// 402: the virtual host path is invalid.
    InvalidPath = 402,
    /// 403: access refused (credentials, reserved names, exclusive use).
    AccessRefused = 403,
    /// 404: entity not found.
    NotFound = 404,
    /// 405: resource locked by another connection (exclusive queue).
    ResourceLocked = 405,
    /// 406: precondition failed (inequivalent arguments, unknown delivery tag...).
    PreconditionFailed = 406,
    /// 501: malformed frame.
    FrameError = 501,
    /// 502: illegal field values.
    SyntaxError = 502,
    /// 503: method invalid in the current state.
    CommandInvalid = 503,
    /// 504: channel used before open or after close.
    ChannelError = 504,
    /// 505: frame of an unexpected type.
    UnexpectedFrame = 505,
    /// 506: server out of a resource.
    ResourceError = 506,
    /// 530: not allowed (unknown vhost...).
    NotAllowed = 530,
    /// 540: not implemented.
    NotImplemented = 540,
    /// 541: internal error.
    InternalError = 541,
}

impl ReplyCode {
    /// Every code, in numeric order.
    pub const ALL: [ReplyCode; 19] = [
        ReplyCode::ReplySuccess,
        ReplyCode::ContentTooLarge,
        ReplyCode::NoRoute,
        ReplyCode::NoConsumers,
        ReplyCode::ConnectionForced,
        ReplyCode::InvalidPath,
        ReplyCode::AccessRefused,
        ReplyCode::NotFound,
        ReplyCode::ResourceLocked,
        ReplyCode::PreconditionFailed,
        ReplyCode::FrameError,
        ReplyCode::SyntaxError,
        ReplyCode::CommandInvalid,
        ReplyCode::ChannelError,
        ReplyCode::UnexpectedFrame,
        ReplyCode::ResourceError,
        ReplyCode::NotAllowed,
        ReplyCode::NotImplemented,
        ReplyCode::InternalError,
    ];

    /// The code of this number, if the spec has one.
    pub fn from_code(code: u16) -> Option<ReplyCode> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The numeric code sent on the wire.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The spec's name for the code, used in reply texts as RabbitMQ does.
    pub fn name(self) -> &'static str {
        match self {
            ReplyCode::ReplySuccess => "REPLY_SUCCESS",
            ReplyCode::ContentTooLarge => "CONTENT_TOO_LARGE",
            ReplyCode::NoRoute => "NO_ROUTE",
            ReplyCode::NoConsumers => "NO_CONSUMERS",
            ReplyCode::ConnectionForced => "CONNECTION_FORCED",
            ReplyCode::InvalidPath => "INVALID_PATH",
            ReplyCode::AccessRefused => "ACCESS_REFUSED",
            ReplyCode::NotFound => "NOT_FOUND",
            ReplyCode::ResourceLocked => "RESOURCE_LOCKED",
            ReplyCode::PreconditionFailed => "PRECONDITION_FAILED",
            ReplyCode::FrameError => "FRAME_ERROR",
            ReplyCode::SyntaxError => "SYNTAX_ERROR",
            ReplyCode::CommandInvalid => "COMMAND_INVALID",
            ReplyCode::ChannelError => "CHANNEL_ERROR",
            ReplyCode::UnexpectedFrame => "UNEXPECTED_FRAME",
            ReplyCode::ResourceError => "RESOURCE_ERROR",
            ReplyCode::NotAllowed => "NOT_ALLOWED",
            ReplyCode::NotImplemented => "NOT_IMPLEMENTED",
            ReplyCode::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// Whether an error closes one channel or the whole connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A soft error: `channel.close`, the connection stays up.
    Channel,
    /// A hard error: `connection.close`.
    Connection,
}

/// An error reported to the client with a close method.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AmqpError {
    /// The reply code.
    pub code: ReplyCode,
    /// Channel or connection.
    pub scope: Scope,
    /// Class id of the method that failed (0 when no method is to blame).
    pub class_id: u16,
    /// Method id of the method that failed.
    pub method_id: u16,
    /// What was wrong, for the client's log.
    pub text: String,
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} - {}", self.code.name(), self.text)
    }
}

impl AmqpError {
    /// A channel-scoped error.
    pub fn channel(code: ReplyCode, text: impl Into<String>) -> Self {
        AmqpError { code, scope: Scope::Channel, class_id: 0, method_id: 0, text: text.into() }
    }

    /// A connection-scoped error.
    pub fn connection(code: ReplyCode, text: impl Into<String>) -> Self {
        AmqpError { code, scope: Scope::Connection, class_id: 0, method_id: 0, text: text.into() }
    }

    /// Names the method that caused the error, unless one is already named.
    pub fn on_method(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 && self.method_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// The reply text as sent: `CODE_NAME - text`, RabbitMQ's format. Truncated to fit a
    /// short string on a character boundary.
    pub fn reply_text(&self) -> String {
        let mut text = format!("{} - {}", self.code.name(), self.text);
        if text.len() > 255 {
            let mut end = 255;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        text
    }

    /// 404 NOT_FOUND on the channel.
    pub fn not_found(text: impl Into<String>) -> Self {
        Self::channel(ReplyCode::NotFound, text)
    }

    /// 406 PRECONDITION_FAILED on the channel.
    pub fn precondition_failed(text: impl Into<String>) -> Self {
        Self::channel(ReplyCode::PreconditionFailed, text)
    }

    /// 403 ACCESS_REFUSED on the channel.
    pub fn access_refused(text: impl Into<String>) -> Self {
        Self::channel(ReplyCode::AccessRefused, text)
    }

    /// 405 RESOURCE_LOCKED on the channel.
    pub fn resource_locked(text: impl Into<String>) -> Self {
        Self::channel(ReplyCode::ResourceLocked, text)
    }

    /// 503 COMMAND_INVALID on the connection.
    pub fn command_invalid(text: impl Into<String>) -> Self {
        Self::connection(ReplyCode::CommandInvalid, text)
    }

    /// 505 UNEXPECTED_FRAME on the connection.
    pub fn unexpected_frame(text: impl Into<String>) -> Self {
        Self::connection(ReplyCode::UnexpectedFrame, text)
    }

    /// 501 FRAME_ERROR on the connection.
    pub fn frame_error(text: impl Into<String>) -> Self {
        Self::connection(ReplyCode::FrameError, text)
    }

    /// 502 SYNTAX_ERROR on the connection.
    pub fn syntax_error(text: impl Into<String>) -> Self {
        Self::connection(ReplyCode::SyntaxError, text)
    }

    /// 504 CHANNEL_ERROR on the connection.
    pub fn channel_error(text: impl Into<String>) -> Self {
        Self::connection(ReplyCode::ChannelError, text)
    }

    /// 540 NOT_IMPLEMENTED on the connection.
    pub fn not_implemented(text: impl Into<String>) -> Self {
        Self::connection(ReplyCode::NotImplemented, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_is_bounded_and_named() {
        let e = AmqpError::not_found("no queue 'q' in vhost '/'");
        assert_eq!(e.reply_text(), "NOT_FOUND - no queue 'q' in vhost '/'");
        let long = AmqpError::precondition_failed("é".repeat(300));
        assert!(long.reply_text().len() <= 255);
    }

    #[test]
    fn on_method_keeps_the_first() {
        let e = AmqpError::not_found("x").on_method(50, 10).on_method(60, 40);
        assert_eq!((e.class_id, e.method_id), (50, 10));
    }
}

//! `connection.tune` negotiation: the server proposes limits, the client answers with
//! `tune-ok`, and the negotiated values bind both sides for the connection's life.

use crate::error::{AmqpError, ReplyCode};
use crate::frame::FRAME_MIN_SIZE;

/// The limits of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Highest channel number (0 in tune-ok: take the server's).
    pub channel_max: u16,
    /// Largest frame in octets, header and end included (0 in tune-ok: no limit asked).
    pub frame_max: u32,
    /// Heartbeat interval in seconds (0: heartbeats off).
    pub heartbeat: u16,
}

/// Checks the client's `tune-ok` against the server's proposal and returns what holds.
///
/// As RabbitMQ: a channel_max or frame_max above the server's, or a frame_max below the
/// spec's minimum, is 530 NOT_ALLOWED; a zero asks for the server's value; the heartbeat is
/// the client's choice.
pub fn negotiate(server: Tuning, client: Tuning) -> Result<Tuning, AmqpError> {
    let not_allowed = |text: String| AmqpError::connection(ReplyCode::NotAllowed, text).on_method(10, 31);
    let channel_max = match client.channel_max {
        0 => server.channel_max,
        n if n > server.channel_max => {
            return Err(not_allowed(format!("negotiated channel_max = {n} is higher than the maximum allowed value ({})", server.channel_max)));
        }
        n => n,
    };
    let frame_max = match client.frame_max {
        0 => server.frame_max,
        n if n < FRAME_MIN_SIZE => {
            return Err(not_allowed(format!("negotiated frame_max = {n} is lower than the minimum allowed value ({FRAME_MIN_SIZE})")));
        }
        n if server.frame_max != 0 && n > server.frame_max => {
            return Err(not_allowed(format!("negotiated frame_max = {n} is higher than the maximum allowed value ({})", server.frame_max)));
        }
        n => n,
    };
    Ok(Tuning { channel_max, frame_max, heartbeat: client.heartbeat })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Tuning = Tuning { channel_max: 2047, frame_max: 131072, heartbeat: 60 };

    #[test]
    fn zeros_take_the_servers_values() {
        let t = negotiate(SERVER, Tuning { channel_max: 0, frame_max: 0, heartbeat: 0 }).expect("ok");
        assert_eq!(t, Tuning { channel_max: 2047, frame_max: 131072, heartbeat: 0 });
    }

    #[test]
    fn limits() {
        assert!(negotiate(SERVER, Tuning { channel_max: 2048, frame_max: 0, heartbeat: 0 }).is_err());
        assert!(negotiate(SERVER, Tuning { channel_max: 1, frame_max: 4095, heartbeat: 0 }).is_err());
        assert!(negotiate(SERVER, Tuning { channel_max: 1, frame_max: 131073, heartbeat: 0 }).is_err());
        assert_eq!(negotiate(SERVER, Tuning { channel_max: 10, frame_max: 4096, heartbeat: 5 }).expect("ok").frame_max, 4096);
    }
}

//! A bounded, allocation-free walker over AMQP field tables and field values.
//!
//! amq-protocol's parser recurses once per nesting level, so ~1,000 nested tables in an
//! 8 KB frame overflow a worker's stack. Every client-supplied table goes through
//! [`skip_table`] first, which checks structure and nesting depth iteratively-bounded by
//! [`MAX_TABLE_DEPTH`] (rabbitmq-c's limit), and reports how many octets the table spans.

use thiserror::Error;

/// The deepest nesting of tables and arrays accepted from a client.
pub const MAX_TABLE_DEPTH: usize = 100;

/// Why a field table was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TableError {
    /// The table ended before a length, key or value did.
    #[error("field table truncated")]
    Truncated,
    /// A value carried a type tag no broker knows.
    #[error("unknown field value type {0:#04x}")]
    UnknownType(u8),
    /// Tables or arrays nested deeper than [`MAX_TABLE_DEPTH`].
    #[error("field table nested deeper than {MAX_TABLE_DEPTH} levels")]
    TooDeep,
}

/// Reads `n` octets at `pos`, or fails with [`TableError::Truncated`].
fn take(input: &[u8], pos: usize, n: usize) -> Result<&[u8], TableError> {
    input.get(pos..pos.checked_add(n).ok_or(TableError::Truncated)?).ok_or(TableError::Truncated)
}

fn long_len(input: &[u8], pos: usize) -> Result<usize, TableError> {
    let b = take(input, pos, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Checks the field table at the start of `input` (a 4-octet length, then entries) and
/// returns the number of octets it spans, length included.
pub fn skip_table(input: &[u8]) -> Result<usize, TableError> {
    skip_table_at(input, 1)
}

fn skip_table_at(input: &[u8], depth: usize) -> Result<usize, TableError> {
    if depth > MAX_TABLE_DEPTH {
        return Err(TableError::TooDeep);
    }
    let len = long_len(input, 0)?;
    let body = take(input, 4, len)?;
    let mut pos = 0;
    while pos < body.len() {
        let key_len = *take(body, pos, 1)?.first().ok_or(TableError::Truncated)? as usize;
        take(body, pos + 1, key_len)?;
        pos += 1 + key_len;
        pos += skip_value(&body[pos..], depth)?;
    }
    Ok(4 + len)
}

/// Checks one tagged field value at the start of `input`; returns the octets it spans.
fn skip_value(input: &[u8], depth: usize) -> Result<usize, TableError> {
    let tag = *input.first().ok_or(TableError::Truncated)?;
    let rest = &input[1..];
    let size = match tag {
        b't' | b'b' | b'B' => 1,
        b's' | b'u' | b'U' => 2,
        b'I' | b'i' | b'f' => 4,
        b'l' | b'L' | b'd' | b'T' => 8,
        b'D' => 5,
        b'V' => 0,
        b'S' | b'x' => 4 + long_len(rest, 0)?,
        b'F' => skip_table_at(rest, depth + 1)?,
        b'A' => skip_array(rest, depth + 1)?,
        other => return Err(TableError::UnknownType(other)),
    };
    take(rest, 0, size)?;
    Ok(1 + size)
}

fn skip_array(input: &[u8], depth: usize) -> Result<usize, TableError> {
    if depth > MAX_TABLE_DEPTH {
        return Err(TableError::TooDeep);
    }
    let len = long_len(input, 0)?;
    let body = take(input, 4, len)?;
    let mut pos = 0;
    while pos < body.len() {
        pos += skip_value(&body[pos..], depth)?;
    }
    Ok(4 + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::WriteContext;
    use amq_protocol::types::generation::gen_field_table;
    use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};

    fn encode(t: &FieldTable) -> Vec<u8> {
        gen_field_table(t)(WriteContext::from(Vec::new())).expect("encodes").write
    }

    fn nested(depth: usize) -> Vec<u8> {
        // Builds depth levels of {"a": {...}} by hand, innermost first.
        let mut inner: Vec<u8> = vec![0, 0, 0, 0];
        for _ in 1..depth {
            let mut t = Vec::new();
            let entry_len = 1 + 1 + 1 + inner.len();
            t.extend_from_slice(&(entry_len as u32).to_be_bytes());
            t.extend_from_slice(&[1, b'a', b'F']);
            t.extend_from_slice(&inner);
            inner = t;
        }
        inner
    }

    #[test]
    fn spans_a_real_table() {
        let mut t = FieldTable::default();
        t.insert("s".into(), AMQPValue::LongString(LongString::from("hello")));
        t.insert("n".into(), AMQPValue::LongLongInt(-3));
        t.insert("a".into(), AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(true)])));
        let mut inner = FieldTable::default();
        inner.insert("x".into(), AMQPValue::Void);
        t.insert("t".into(), AMQPValue::FieldTable(inner));
        let bytes = encode(&t);
        assert_eq!(skip_table(&bytes), Ok(bytes.len()));
        for cut in 0..bytes.len() {
            assert!(skip_table(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn depth_limit() {
        assert!(skip_table(&nested(MAX_TABLE_DEPTH)).is_ok());
        assert_eq!(skip_table(&nested(MAX_TABLE_DEPTH + 1)), Err(TableError::TooDeep));
        assert_eq!(skip_table(&nested(5000)), Err(TableError::TooDeep));
    }

    #[test]
    fn unknown_type() {
        let bytes = [0, 0, 0, 3, 1, b'k', b'?'];
        assert_eq!(skip_table(&bytes), Err(TableError::UnknownType(b'?')));
    }
}

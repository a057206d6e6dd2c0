//! postcard-encoded control messages over a byte ring.
//!
//! The one idea: one message is one record, encoded into and decoded from a
//! caller-provided scratch buffer, so there is no allocation and the largest
//! message is bounded by the buffer the caller chose. Bytes from the peer are
//! decoded by postcard, which rejects malformed input with an error.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::bytes::{ByteConsumer, ByteProducer};
use super::{Notify, RingError, SharedMem};

/// Errors of the message layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgError {
    /// The ring refused or the peer broke the ring protocol.
    Ring(RingError),
    /// The message does not encode into the scratch buffer.
    Encode,
    /// The record is not a valid encoding of the expected type. It has been
    /// consumed; `notify` says whether the producer must still be told so.
    Malformed { notify: Notify },
}

impl From<RingError> for MsgError {
    fn from(e: RingError) -> Self {
        MsgError::Ring(e)
    }
}

/// Encodes `msg` into `scratch` and queues it as one record.
pub fn send_msg<M: SharedMem, T: Serialize>(
    ring: &mut ByteProducer<M>,
    msg: &T,
    scratch: &mut [u8],
) -> Result<Notify, MsgError> {
    let encoded = postcard::to_slice(msg, scratch).map_err(|_| MsgError::Encode)?;
    Ok(ring.push(encoded)?)
}

/// Takes the next record and decodes it as a `T`, using `scratch` to hold the
/// encoded bytes. `Ok(None)` means the ring is empty (and armed). A record
/// with trailing bytes after the value is malformed, not silently accepted.
pub fn recv_msg<M: SharedMem, T: DeserializeOwned>(
    ring: &mut ByteConsumer<M>,
    scratch: &mut [u8],
) -> Result<Option<(T, Notify)>, MsgError> {
    let Some(received) = ring.pop(scratch)? else {
        return Ok(None);
    };
    let malformed = MsgError::Malformed {
        notify: received.notify,
    };
    let bytes = scratch.get(..received.len).ok_or(malformed)?;
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|_| malformed)?;
    if !rest.is_empty() {
        return Err(malformed);
    }
    Ok(Some((value, received.notify)))
}

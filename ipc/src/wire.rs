//! What crosses a sivshm channel between two gateways: one channel message per announcement
//! or per relayed frame, every service multiplexed over the one channel of the VM pair.
//!
//! ```text
//! offered    1 | postcard(ServiceDescriptor)
//! withdrawn  2 | service hash (its characters)
//! frame      3 | hash length (1 byte) | service hash | frame bytes (user header, payload)
//! ```
//!
//! Everything here is read from the peer and so untrusted: decoding checks every length and
//! every hash and answers [`Malformed`] for anything else, never panics.

use std::fmt;

use iceoryx2::service::service_hash::ServiceHash;
use iceoryx2_link_backend::service_description::ServiceDescriptor;

const OFFERED: u8 = 1;
const WITHDRAWN: u8 = 2;
const FRAME: u8 = 3;

/// One message of the carrier, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // decoded one at a time and taken apart at once
pub enum Message<'a> {
    Offered(ServiceDescriptor),
    Withdrawn(ServiceHash),
    /// A frame of the service with this hash, the bytes as the tunnel's relay wrote them.
    Frame {
        hash: ServiceHash,
        bytes: &'a [u8],
    },
}

/// A channel message that no honest gateway writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed carrier message: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// The announcement of an offered service.
pub fn offered(descriptor: &ServiceDescriptor) -> Vec<u8> {
    let mut out = vec![OFFERED];
    // A descriptor always serialises (names, hashes, type names are bounded strings).
    out.extend(postcard::to_allocvec(descriptor).unwrap_or_default());
    out
}

/// The withdrawal of a service.
pub fn withdrawn(hash: &ServiceHash) -> Vec<u8> {
    let mut out = vec![WITHDRAWN];
    out.extend_from_slice(hash.as_str().as_bytes());
    out
}

/// The bytes in front of a frame of the service `hash`: tag, hash length, hash.
pub fn frame_prefix(hash: &ServiceHash) -> Vec<u8> {
    let h = hash.as_str().as_bytes();
    // A hash has at most ServiceHash::max_number_of_characters() (64) characters.
    let mut out = Vec::with_capacity(2 + h.len());
    out.push(FRAME);
    out.push(h.len() as u8);
    out.extend_from_slice(h);
    out
}

fn hash(bytes: &[u8]) -> Result<ServiceHash, Malformed> {
    let s = std::str::from_utf8(bytes).map_err(|_| Malformed("service hash is not UTF-8"))?;
    ServiceHash::try_from(s).map_err(|_| Malformed("not a service hash"))
}

/// Decodes one channel message.
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, Malformed> {
    let (&tag, rest) = bytes.split_first().ok_or(Malformed("empty message"))?;
    match tag {
        OFFERED => {
            let (descriptor, left): (ServiceDescriptor, _) = postcard::take_from_bytes(rest)
                .map_err(|_| Malformed("offer is no service descriptor"))?;
            if !left.is_empty() {
                return Err(Malformed("bytes after a service descriptor"));
            }
            Ok(Message::Offered(descriptor))
        }
        WITHDRAWN => Ok(Message::Withdrawn(hash(rest)?)),
        FRAME => {
            let (&len, rest) = rest.split_first().ok_or(Malformed("frame without hash"))?;
            let len = usize::from(len);
            if rest.len() < len {
                return Err(Malformed("frame shorter than its hash"));
            }
            let (h, bytes) = rest.split_at(len);
            Ok(Message::Frame {
                hash: hash(h)?,
                bytes,
            })
        }
        _ => Err(Malformed("unknown message tag")),
    }
}

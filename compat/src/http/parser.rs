//! Incremental HTTP/1.1 request parsing for [`HttpChannel`](super::HttpChannel):
//! the request line and headers with `httparse`, then the body framed by
//! `Content-Length` or `Transfer-Encoding: chunked`, within the site's
//! limits. Twisted's `HTTPChannel.lineReceived`/`headerReceived`/
//! `_IdentityTransferDecoder`/`_ChunkedTransferDecoder`, as one state
//! machine that consumes the bytes it has used.

use std::fmt;

/// The limits a request must stay within (see
/// [`SiteConfig`](super::SiteConfig)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_header_size: usize,
    pub max_headers: usize,
    pub max_body_size: usize,
}

/// A request's line and headers.
#[derive(Debug, Clone)]
pub(crate) struct RequestHead {
    pub method: String,
    pub target: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: &'static str,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A complete request.
#[derive(Debug)]
pub(crate) struct ParsedRequest {
    pub head: RequestHead,
    pub body: Vec<u8>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Malformed: answered with `400 Bad Request` (Twisted's
    /// `_respondToBadRequestAndDisconnect`).
    BadRequest(&'static str),
    /// The body exceeds the limit: answered with `413` (Synapse's
    /// `ContentLengthError`).
    TooLarge { limit: usize },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadRequest(why) => f.write_str(why),
            ParseError::TooLarge { limit } => {
                write!(f, "Request content is too large (>{limit})")
            }
        }
    }
}

#[derive(Debug)]
enum Framing {
    Length(usize),
    Chunked,
}

#[derive(Debug)]
enum Chunk {
    Size,
    Data(usize),
    DataEnd,
    Trailers { seen: usize },
}

#[derive(Debug)]
enum State {
    Head,
    Body {
        head: RequestHead,
        framing: Framing,
        body: Vec<u8>,
        chunk: Chunk,
    },
}

/// The longest chunk-size line accepted (size, extensions).
const MAX_CHUNK_LINE: usize = 1024;

#[derive(Debug)]
pub(crate) struct RequestParser {
    limits: Limits,
    state: State,
    /// Set when a head asking `Expect: 100-continue` was parsed.
    send_continue: bool,
}

impl RequestParser {
    pub fn new(limits: Limits) -> RequestParser {
        RequestParser {
            limits,
            state: State::Head,
            send_continue: false,
        }
    }

    /// Whether a `100 Continue` is due (cleared by reading it).
    pub fn take_continue(&mut self) -> bool {
        std::mem::take(&mut self.send_continue)
    }

    /// True while part of a request has been parsed.
    pub fn in_request(&self) -> bool {
        matches!(self.state, State::Body { .. })
    }

    /// Parses from `buffer`, removing what it uses. `Ok(None)`: more bytes
    /// are needed.
    pub fn parse(&mut self, buffer: &mut Vec<u8>) -> Result<Option<ParsedRequest>, ParseError> {
        if let State::Head = self.state {
            let Some((head, framing, used)) = self.parse_head(buffer)? else {
                return Ok(None);
            };
            buffer.drain(..used);
            self.state = State::Body {
                head,
                framing,
                body: Vec::new(),
                chunk: Chunk::Size,
            };
        }
        let limits = self.limits;
        let State::Body {
            framing,
            body,
            chunk,
            ..
        } = &mut self.state
        else {
            return Ok(None);
        };
        let done = match framing {
            Framing::Length(length) => {
                let wanted = *length - body.len();
                let take = wanted.min(buffer.len());
                body.extend(buffer.drain(..take));
                body.len() == *length
            }
            Framing::Chunked => decode_chunks(buffer, body, chunk, limits)?,
        };
        if !done {
            return Ok(None);
        }
        match std::mem::replace(&mut self.state, State::Head) {
            State::Body { head, body, .. } => Ok(Some(ParsedRequest { head, body })),
            State::Head => Ok(None),
        }
    }

    fn parse_head(
        &mut self,
        buffer: &[u8],
    ) -> Result<Option<(RequestHead, Framing, usize)>, ParseError> {
        let mut headers = vec![httparse::EMPTY_HEADER; self.limits.max_headers.min(65_536)];
        let mut request = httparse::Request::new(&mut headers);
        let used = match request.parse(buffer) {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) => {
                if buffer.len() > self.limits.max_header_size {
                    return Err(ParseError::BadRequest("request headers too large"));
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ParseError::BadRequest("too many headers"));
            }
            Err(_) => return Err(ParseError::BadRequest("malformed request")),
        };
        if used > self.limits.max_header_size {
            return Err(ParseError::BadRequest("request headers too large"));
        }
        let version = match request.version {
            Some(0) => "HTTP/1.0",
            Some(1) => "HTTP/1.1",
            _ => return Err(ParseError::BadRequest("unsupported HTTP version")),
        };
        let method = request.method.unwrap_or_default().to_owned();
        let target = request.path.unwrap_or_default().to_owned();
        if !target.starts_with('/') {
            return Err(ParseError::BadRequest("request target is not a path"));
        }
        let headers: Vec<(String, Vec<u8>)> = request
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect();
        let framing = self.framing(&headers)?;
        if version == "HTTP/1.1"
            && header_value(&headers, "expect")
                .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
            && !matches!(framing, Framing::Length(0))
        {
            self.send_continue = true;
        }
        Ok(Some((
            RequestHead {
                method,
                target,
                version,
                headers,
            },
            framing,
            used,
        )))
    }

    fn framing(&self, headers: &[(String, Vec<u8>)]) -> Result<Framing, ParseError> {
        let lengths: Vec<&[u8]> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.as_slice())
            .collect();
        let encodings: Vec<&[u8]> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
            .map(|(_, v)| v.as_slice())
            .filter(|v| !v.eq_ignore_ascii_case(b"identity"))
            .collect();
        match (lengths.as_slice(), encodings.as_slice()) {
            ([], []) => Ok(Framing::Length(0)),
            ([], [te]) if te.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            ([], _) => Err(ParseError::BadRequest("unsupported Transfer-Encoding")),
            ([length], []) => {
                if length.is_empty() || !length.iter().all(u8::is_ascii_digit) {
                    return Err(ParseError::BadRequest(
                        "Content-Length header value is not a valid integer",
                    ));
                }
                // All digits: only overflow can fail, and that is too large.
                let length = std::str::from_utf8(length)
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                    .unwrap_or(usize::MAX);
                if length > self.limits.max_body_size {
                    return Err(ParseError::TooLarge {
                        limit: self.limits.max_body_size,
                    });
                }
                Ok(Framing::Length(length))
            }
            ([_, _, ..], _) => Err(ParseError::BadRequest(
                "Multiple Content-Length headers received",
            )),
            (_, _) => Err(ParseError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            )),
        }
    }
}

/// Decodes chunked data from `buffer` into `body`; true once the last
/// chunk and the trailers are in.
fn decode_chunks(
    buffer: &mut Vec<u8>,
    body: &mut Vec<u8>,
    chunk: &mut Chunk,
    limits: Limits,
) -> Result<bool, ParseError> {
    loop {
        match chunk {
            Chunk::Size => match httparse::parse_chunk_size(buffer) {
                Ok(httparse::Status::Complete((used, size))) => {
                    buffer.drain(..used);
                    if size == 0 {
                        *chunk = Chunk::Trailers { seen: 0 };
                        continue;
                    }
                    let size = usize::try_from(size).unwrap_or(usize::MAX);
                    if size > limits.max_body_size.saturating_sub(body.len()) {
                        return Err(ParseError::TooLarge {
                            limit: limits.max_body_size,
                        });
                    }
                    *chunk = Chunk::Data(size);
                }
                Ok(httparse::Status::Partial) => {
                    if buffer.len() > MAX_CHUNK_LINE {
                        return Err(ParseError::BadRequest("chunk size line too long"));
                    }
                    return Ok(false);
                }
                Err(_) => return Err(ParseError::BadRequest("malformed chunk size")),
            },
            Chunk::Data(remaining) => {
                let take = (*remaining).min(buffer.len());
                body.extend(buffer.drain(..take));
                *remaining -= take;
                if *remaining > 0 {
                    return Ok(false);
                }
                *chunk = Chunk::DataEnd;
            }
            Chunk::DataEnd => {
                if buffer.len() < 2 {
                    return Ok(false);
                }
                if &buffer[..2] != b"\r\n" {
                    return Err(ParseError::BadRequest("malformed chunked data"));
                }
                buffer.drain(..2);
                *chunk = Chunk::Size;
            }
            Chunk::Trailers { seen } => {
                let Some(end) = buffer.windows(2).position(|w| w == b"\r\n") else {
                    if *seen + buffer.len() > limits.max_header_size {
                        return Err(ParseError::BadRequest("trailers too large"));
                    }
                    return Ok(false);
                };
                buffer.drain(..end + 2);
                if end == 0 {
                    return Ok(true);
                }
                *seen += end + 2;
                if *seen > limits.max_header_size {
                    return Err(ParseError::BadRequest("trailers too large"));
                }
            }
        }
    }
}

/// The first value of header `name` (case-insensitive).
pub(crate) fn header_value<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> RequestParser {
        RequestParser::new(Limits {
            max_header_size: 1024,
            max_headers: 20,
            max_body_size: 100,
        })
    }

    #[test]
    fn byte_by_byte() {
        let raw = b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\nGET";
        let mut p = parser();
        let mut buffer = Vec::new();
        let mut got = None;
        for b in raw {
            buffer.push(*b);
            if let Some(r) = p.parse(&mut buffer).unwrap() {
                got = Some(r);
                break;
            }
        }
        let r = got.unwrap();
        assert_eq!(r.head.method, "POST");
        assert_eq!(r.head.target, "/a?b=1");
        assert_eq!(r.body, b"abcde");
    }

    #[test]
    fn limits() {
        let mut buffer = b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n".to_vec();
        assert_eq!(
            parser().parse(&mut buffer).unwrap_err(),
            ParseError::TooLarge { limit: 100 }
        );
        let mut buffer =
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n".to_vec();
        assert!(matches!(
            parser().parse(&mut buffer),
            Err(ParseError::BadRequest(_))
        ));
        let mut buffer = vec![b'a'; 2000];
        assert!(matches!(
            parser().parse(&mut buffer),
            Err(ParseError::BadRequest(_))
        ));
    }
}

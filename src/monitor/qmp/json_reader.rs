//! QEMU's JSON reader (qobject/json-lexer.c, json-streamer.c, json-parser.c as of 7.2),
//! reproduced for what clients rely on: single-quoted strings, any number of values per
//! read and values split across reads, and recovery from garbage with QEMU's error texts
//! (an invalid byte yields `JSON parse error, stray '…'` and the lexer skips to the next
//! structural or control character).
//!
//! Feed bytes with [`JsonReader::feed`]; every complete top-level value (or error) comes
//! out in order.

use super::qobject::{QDict, QObject};
use super::utf8::{is_valid_codepoint, lossy, mod_utf8_codepoint};

/// QEMU's limits on one value, beyond which it reports an error instead.
const MAX_TOKEN_SIZE: usize = 64 << 20;
const MAX_TOKEN_COUNT: usize = 2 << 20;
const MAX_NESTING: i64 = 1 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenKind {
    LCurly,
    RCurly,
    LSquare,
    RSquare,
    Colon,
    Comma,
    Integer,
    Float,
    Keyword,
    String,
}

#[derive(Debug)]
struct Token {
    kind: TokenKind,
    text: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Start,
    /// After an error: skipping to a place where a value may start.
    Recovery,
    DqString,
    DqEscape,
    SqString,
    SqEscape,
    Zero,
    ExpDigits,
    ExpSign,
    ExpE,
    Mantissa,
    MantissaDigits,
    Digits,
    Sign,
    Keyword,
}

/// What one byte does to the lexer.
enum Step {
    /// Consume the byte, go to the state.
    Go(State),
    /// Consume the byte, skip it (whitespace between tokens).
    Skip,
    /// The byte completes a token (`lookahead`: it is not part of it and is read again).
    Emit(TokenKind, bool),
    /// The byte is invalid here (it is part of the stray text).
    Error,
    /// Recovery ends before this byte, which is read again from the start state.
    Resync,
}

fn step(state: State, b: u8) -> Step {
    use State::*;
    use Step::*;
    match state {
        Start => match b {
            b'"' => Go(DqString),
            b'\'' => Go(SqString),
            b'0' => Go(Zero),
            b'1'..=b'9' => Go(Digits),
            b'-' => Go(Sign),
            b'{' => Emit(TokenKind::LCurly, false),
            b'}' => Emit(TokenKind::RCurly, false),
            b'[' => Emit(TokenKind::LSquare, false),
            b']' => Emit(TokenKind::RSquare, false),
            b',' => Emit(TokenKind::Comma, false),
            b':' => Emit(TokenKind::Colon, false),
            b'a'..=b'z' => Go(Keyword),
            b' ' | b'\t' | b'\r' | b'\n' => Skip,
            _ => Error,
        },
        Recovery => match b {
            b'\t' => Go(Recovery),
            0..=0x1F | 0xFE | 0xFF | b'[' | b']' | b'{' | b'}' | b':' | b',' => Resync,
            _ => Go(Recovery),
        },
        DqString => match b {
            b'\\' => Go(DqEscape),
            b'"' => Emit(TokenKind::String, false),
            0x20..=0xFD => Go(DqString),
            _ => Error,
        },
        SqString => match b {
            b'\\' => Go(SqEscape),
            b'\'' => Emit(TokenKind::String, false),
            0x20..=0xFD => Go(SqString),
            _ => Error,
        },
        DqEscape | SqEscape => match b {
            0x20..=0xFD if state == DqEscape => Go(DqString),
            0x20..=0xFD => Go(SqString),
            _ => Error,
        },
        Zero => match b {
            b'0'..=b'9' => Error,
            b'.' => Go(Mantissa),
            _ => Emit(TokenKind::Integer, true),
        },
        ExpDigits => match b {
            b'0'..=b'9' => Go(ExpDigits),
            _ => Emit(TokenKind::Float, true),
        },
        ExpSign => match b {
            b'0'..=b'9' => Go(ExpDigits),
            _ => Error,
        },
        ExpE => match b {
            b'-' | b'+' => Go(ExpSign),
            b'0'..=b'9' => Go(ExpDigits),
            _ => Error,
        },
        MantissaDigits => match b {
            b'0'..=b'9' => Go(MantissaDigits),
            b'e' | b'E' => Go(ExpE),
            _ => Emit(TokenKind::Float, true),
        },
        Mantissa => match b {
            b'0'..=b'9' => Go(MantissaDigits),
            _ => Error,
        },
        Digits => match b {
            b'0'..=b'9' => Go(Digits),
            b'e' | b'E' => Go(ExpE),
            b'.' => Go(Mantissa),
            _ => Emit(TokenKind::Integer, true),
        },
        Sign => match b {
            b'0' => Go(Zero),
            b'1'..=b'9' => Go(Digits),
            _ => Error,
        },
        Keyword => match b {
            b'a'..=b'z' => Go(Keyword),
            _ => Emit(TokenKind::Keyword, true),
        },
    }
}

/// A top-level JSON value, or QEMU's error text for what was read instead.
pub type JsonResult = Result<QObject, String>;

/// The incremental reader: lexer plus QEMU's "streamer" that cuts the token stream into
/// top-level values.
#[derive(Debug)]
pub struct JsonReader {
    state: State,
    token: Vec<u8>,
    tokens: Vec<Token>,
    tokens_size: usize,
    braces: i64,
    brackets: i64,
}

impl Default for JsonReader {
    fn default() -> JsonReader {
        JsonReader::new()
    }
}

impl JsonReader {
    pub fn new() -> JsonReader {
        JsonReader {
            state: State::Start,
            token: Vec::new(),
            tokens: Vec::new(),
            tokens_size: 0,
            braces: 0,
            brackets: 0,
        }
    }

    /// Forgets any partial input (a new connection starts afresh).
    pub fn reset(&mut self) {
        *self = JsonReader::new();
    }

    /// Reads `bytes`, calling `emit` for each complete value or error, in order.
    pub fn feed(&mut self, bytes: &[u8], emit: &mut dyn FnMut(JsonResult)) {
        for &b in bytes {
            self.feed_byte(b, emit);
        }
    }

    fn feed_byte(&mut self, b: u8, emit: &mut dyn FnMut(JsonResult)) {
        loop {
            match step(self.state, b) {
                Step::Go(state) => {
                    if state == State::Recovery {
                        self.token.clear();
                    } else {
                        self.token.push(b);
                    }
                    self.state = state;
                }
                Step::Skip => {
                    self.token.clear();
                    self.state = State::Start;
                }
                Step::Emit(kind, lookahead) => {
                    if !lookahead {
                        self.token.push(b);
                    }
                    let text = std::mem::take(&mut self.token);
                    self.state = State::Start;
                    self.process_token(kind, text, emit);
                    if lookahead {
                        continue;
                    }
                }
                Step::Error => {
                    self.token.push(b);
                    let text = std::mem::take(&mut self.token);
                    self.state = State::Recovery;
                    self.stray(&text, emit);
                }
                Step::Resync => {
                    self.state = State::Start;
                    continue;
                }
            }
            break;
        }
        if self.token.len() > MAX_TOKEN_SIZE {
            // One token too large: QEMU gives up on the value.
            self.token.clear();
            self.state = State::Start;
            self.fail("JSON token size limit exceeded".into(), emit);
        }
    }

    fn stray(&mut self, text: &[u8], emit: &mut dyn FnMut(JsonResult)) {
        // QEMU formats the token as a C string: it ends at a NUL byte.
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
        let message = format!("JSON parse error, stray '{}'", lossy(&text[..end]));
        self.fail(message, emit);
    }

    fn fail(&mut self, message: String, emit: &mut dyn FnMut(JsonResult)) {
        self.clear_value();
        emit(Err(message));
    }

    fn clear_value(&mut self) {
        self.tokens.clear();
        self.tokens_size = 0;
        self.braces = 0;
        self.brackets = 0;
    }

    fn process_token(&mut self, kind: TokenKind, text: Vec<u8>, emit: &mut dyn FnMut(JsonResult)) {
        match kind {
            TokenKind::LCurly => self.braces += 1,
            TokenKind::RCurly => self.braces -= 1,
            TokenKind::LSquare => self.brackets += 1,
            TokenKind::RSquare => self.brackets -= 1,
            _ => {}
        }
        if self.tokens_size + text.len() + 1 > MAX_TOKEN_SIZE {
            return self.fail("JSON token size limit exceeded".into(), emit);
        }
        if self.tokens.len() + 1 > MAX_TOKEN_COUNT {
            return self.fail("JSON token count limit exceeded".into(), emit);
        }
        if self.braces + self.brackets > MAX_NESTING {
            return self.fail("JSON nesting depth limit exceeded".into(), emit);
        }
        self.tokens_size += text.len();
        self.tokens.push(Token { kind, text });
        if (self.braces > 0 || self.brackets > 0) && self.braces >= 0 && self.brackets >= 0 {
            return;
        }
        let tokens = std::mem::take(&mut self.tokens);
        self.clear_value();
        let mut parser = Parser {
            tokens: &tokens,
            pos: 0,
        };
        emit(parser.value().map_err(|e| format!("JSON parse error, {e}")));
    }
}

/// QEMU's recursive-descent parser over one top-level value's tokens. Errors are the text
/// after `JSON parse error, `; the innermost error wins, as in QEMU.
struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
}

type ParseResult<T> = Result<T, String>;

const PREMATURE_EOI: &str = "premature EOI";

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn pop(&mut self) -> ParseResult<&Token> {
        let token = self.tokens.get(self.pos).ok_or(PREMATURE_EOI)?;
        self.pos += 1;
        Ok(token)
    }

    fn value(&mut self) -> ParseResult<QObject> {
        let token = self.peek().ok_or(PREMATURE_EOI)?;
        match token.kind {
            TokenKind::LCurly => self.object(),
            TokenKind::LSquare => self.array(),
            TokenKind::Integer | TokenKind::Float | TokenKind::String => self.literal(),
            TokenKind::Keyword => self.keyword(),
            _ => Err("expecting value".into()),
        }
    }

    fn object(&mut self) -> ParseResult<QObject> {
        self.pop()?;
        let mut dict = QDict::new();
        if self.peek().ok_or(PREMATURE_EOI)?.kind == TokenKind::RCurly {
            self.pop()?;
            return Ok(QObject::Dict(dict));
        }
        self.pair(&mut dict)?;
        loop {
            match self.pop()?.kind {
                TokenKind::RCurly => return Ok(QObject::Dict(dict)),
                TokenKind::Comma => self.pair(&mut dict)?,
                _ => return Err("expected separator in dict".into()),
            }
        }
    }

    fn pair(&mut self, dict: &mut QDict) -> ParseResult<()> {
        self.peek().ok_or(PREMATURE_EOI)?;
        let QObject::String(key) = self.value()? else {
            return Err("key is not a string in object".into());
        };
        if self.pop()?.kind != TokenKind::Colon {
            return Err("missing : in object pair".into());
        }
        let value = self.value()?;
        if dict.contains_key(&key) {
            return Err("duplicate key".into());
        }
        dict.put(&key, value);
        Ok(())
    }

    fn array(&mut self) -> ParseResult<QObject> {
        self.pop()?;
        let mut list = Vec::new();
        if self.peek().ok_or(PREMATURE_EOI)?.kind == TokenKind::RSquare {
            self.pop()?;
            return Ok(QObject::List(list));
        }
        list.push(self.value()?);
        loop {
            match self.pop()?.kind {
                TokenKind::RSquare => return Ok(QObject::List(list)),
                TokenKind::Comma => list.push(self.value()?),
                _ => return Err("expected separator in list".into()),
            }
        }
    }

    fn keyword(&mut self) -> ParseResult<QObject> {
        let token = self.pop()?;
        match token.text.as_slice() {
            b"true" => Ok(QObject::Bool(true)),
            b"false" => Ok(QObject::Bool(false)),
            b"null" => Ok(QObject::Null),
            other => Err(format!("invalid keyword '{}'", lossy(other))),
        }
    }

    fn literal(&mut self) -> ParseResult<QObject> {
        let token = self.pop()?;
        // The lexer guarantees ASCII digits, sign, point and exponent for numbers.
        let text = std::str::from_utf8(&token.text).unwrap_or_default();
        match token.kind {
            TokenKind::String => parse_string(&token.text).map(QObject::String),
            TokenKind::Integer => Ok(if let Ok(i) = text.parse::<i64>() {
                QObject::Int(i)
            } else if let (false, Ok(u)) = (text.starts_with('-'), text.parse::<u64>()) {
                QObject::Uint(u)
            } else {
                QObject::Double(text.parse().unwrap_or(f64::NAN))
            }),
            _ => Ok(QObject::Double(text.parse().unwrap_or(f64::NAN))),
        }
    }
}

fn hex4(bytes: &[u8]) -> Option<u32> {
    let digits = bytes.get(..4)?;
    let text = std::str::from_utf8(digits).ok()?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

/// Decodes a string token (quotes included) with QEMU's escapes (`\'` too) and checks.
fn parse_string(token: &[u8]) -> ParseResult<String> {
    let quote = token[0];
    let mut out = String::new();
    let mut pos = 1;
    while token[pos] != quote {
        if token[pos] == b'\\' {
            let start = pos;
            pos += 1;
            let escape = token[pos];
            pos += 1;
            let c = match escape {
                b'"' => '"',
                b'\'' => '\'',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let mut cp = hex4(&token[pos..]);
                    pos += 4.min(token.len() - pos);
                    if let Some(lead @ 0xD800..=0xDBFF) = cp {
                        if token[pos..].starts_with(b"\\u") {
                            cp = match hex4(&token[pos + 2..]) {
                                Some(trail @ 0xDC00..=0xDFFF) => {
                                    pos += 6;
                                    Some(0x10000 + ((lead & 0x3FF) << 10) + (trail & 0x3FF))
                                }
                                _ => None,
                            };
                        }
                    }
                    match cp
                        .filter(|&cp| is_valid_codepoint(cp))
                        .and_then(char::from_u32)
                    {
                        Some(c) => c,
                        None => {
                            let end = pos.min(token.len());
                            return Err(format!(
                                "{} is not a valid Unicode character",
                                lossy(&token[start..end])
                            ));
                        }
                    }
                }
                _ => return Err("invalid escape sequence in string".into()),
            };
            out.push(c);
        } else {
            match mod_utf8_codepoint(&token[pos..]) {
                (Some(cp), len) => {
                    pos += len;
                    // Valid code points are never surrogates.
                    out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                }
                (None, _) => return Err("invalid UTF-8 sequence in string".into()),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::json_writer::to_json;
    use super::*;

    /// Feeds the chunks and renders each result as QEMU would show it.
    fn read(chunks: &[&[u8]]) -> Vec<String> {
        let mut reader = JsonReader::new();
        let mut out = Vec::new();
        for chunk in chunks {
            reader.feed(chunk, &mut |r| {
                out.push(match r {
                    Ok(v) => to_json(&v, false),
                    Err(e) => format!("ERR {e}"),
                })
            });
        }
        out
    }

    #[test]
    fn several_values_and_values_across_reads() {
        assert_eq!(
            read(&[b"{'execute':'a'} {\"execute\": \"b\"}{}"]),
            [r#"{"execute": "a"}"#, r#"{"execute": "b"}"#, "{}"]
        );
        assert_eq!(
            read(&[b"{\"exe", b"cute\":", b" [1, 2.5, -3, true, null]", b"}"]),
            [r#"{"execute": [1, 2.5, -3, true, null]}"#]
        );
        assert_eq!(read(&[b"1 \"x\" 'y' "]), ["1", "\"x\"", "\"y\""]);
        assert_eq!(
            read(&[b"{\"execute\": \n", b"}\n"]),
            ["ERR JSON parse error, expecting value"]
        );
    }

    #[test]
    fn errors_have_qemus_texts_and_recover() {
        // Observed on QEMU 7.2.
        assert_eq!(
            read(&[b"\xff{\"a\":1}"]),
            ["ERR JSON parse error, stray '\u{FFFD}'", r#"{"a": 1}"#]
        );
        assert_eq!(
            read(&[b"{\"a\":1\x01}"]),
            [
                "ERR JSON parse error, stray '\u{1}'",
                "ERR JSON parse error, expecting value"
            ]
        );
        assert_eq!(
            read(&[b"{\"a\":1 X}"]),
            [
                "ERR JSON parse error, stray 'X'",
                "ERR JSON parse error, expecting value"
            ]
        );
        assert_eq!(
            read(&[b"{\"a\":1 xyz}"]),
            ["ERR JSON parse error, expected separator in dict"]
        );
        assert_eq!(
            read(&[b"{\"a\":tru}"]),
            ["ERR JSON parse error, invalid keyword 'tru'"]
        );
        assert_eq!(
            read(&[b"{\"a\":1, \"a\":2}"]),
            ["ERR JSON parse error, duplicate key"]
        );
        assert_eq!(read(&[b"}"]), ["ERR JSON parse error, expecting value"]);
        assert_eq!(
            read(&[b"{\"a\":\"\\x\"}"]),
            ["ERR JSON parse error, invalid escape sequence in string"]
        );
        assert_eq!(
            read(&[b"{\"a\":\"\\uD800\"}"]),
            ["ERR JSON parse error, \\uD800 is not a valid Unicode character"]
        );
        assert_eq!(
            read(&[b"{\"a\":\"\xc3\"}"]),
            ["ERR JSON parse error, invalid UTF-8 sequence in string"]
        );
        assert_eq!(
            read(&[b"{1:2}"]),
            ["ERR JSON parse error, key is not a string in object"]
        );
        assert_eq!(
            read(&[b"{\"a\" 2}"]),
            ["ERR JSON parse error, missing : in object pair"]
        );
        assert_eq!(
            read(&[b"[1 2]"]),
            ["ERR JSON parse error, expected separator in list"]
        );
        assert_eq!(read(&[b"\x00{}"]), ["ERR JSON parse error, stray ''", "{}"]);
        // Recovery skips to the next structural character.
        assert_eq!(
            read(&[b"@garbage here{\"a\":1}"]),
            ["ERR JSON parse error, stray '@'", r#"{"a": 1}"#]
        );
        assert_eq!(read(&[b"01"]), ["ERR JSON parse error, stray '01'"]);
    }

    #[test]
    fn strings_and_numbers() {
        assert_eq!(
            read(&[b"[\"nop\xc3\xa9\\t\\u0000\\/\xf0\x9f\x98\x80\", '\"q\\'']"]),
            [r#"["nop\u00E9\t\u0000/\uD83D\uDE00", "\"q'"]"#]
        );
        assert_eq!(
            read(&[b"[1e300, 0.1, -0.0, 100000000000000000000, 18446744073709551615, -9223372036854775809, 1.0, 123456789012345678]"]),
            ["[1.0000000000000001e+300, 0.10000000000000001, -0, 1e+20, 18446744073709551615, -9.2233720368547758e+18, 1, 123456789012345678]"]
        );
        assert_eq!(read(&[b"\"\\uD83D\\uDE00\""]), ["\"\\uD83D\\uDE00\""]);
    }

    #[test]
    fn nesting_limit() {
        let deep = vec![b'['; 1100];
        // The 1025th bracket is refused; the rest starts a new (incomplete) value.
        assert_eq!(read(&[&deep]), ["ERR JSON nesting depth limit exceeded"]);
    }
}

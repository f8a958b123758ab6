//! Tokens of the condition language (a subset of CEL), each with the line and column it starts
//! at, so every error can point at the character that caused it.

use super::RuleError;

/// Where a token or node starts: 1-based line and column (in characters), and byte offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
    pub offset: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// An integer's magnitude; the parser applies a leading `-` (so `-9223372036854775808`
    /// is representable).
    Int(u64),
    Double(f64),
    Str(String),
    Ident(String),
    True,
    False,
    Null,
    In,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Dot,
    Comma,
    Question,
    Colon,
    Bang,
    Minus,
    Plus,
    Star,
    Slash,
    Percent,
    Lt,
    Le,
    Gt,
    Ge,
    EqEq,
    Ne,
    AndAnd,
    OrOr,
    Eof,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Int(n) => format!("the number {n}"),
            Tok::Double(d) => format!("the number {d}"),
            Tok::Str(_) => "a string".into(),
            Tok::Ident(name) => format!("`{name}`"),
            Tok::Eof => "the end of the expression".into(),
            other => format!("`{}`", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::True => "true",
            Tok::False => "false",
            Tok::Null => "null",
            Tok::In => "in",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::Dot => ".",
            Tok::Comma => ",",
            Tok::Question => "?",
            Tok::Colon => ":",
            Tok::Bang => "!",
            Tok::Minus => "-",
            Tok::Plus => "+",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::EqEq => "==",
            Tok::Ne => "!=",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            _ => "?",
        }
    }
}

/// Words CEL keeps for itself: refused as names so rules stay valid CEL.
pub const RESERVED: &[&str] = &[
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

pub struct Lexer<'s> {
    src: &'s str,
    chars: std::iter::Peekable<std::str::CharIndices<'s>>,
    line: u32,
    column: u32,
}

impl<'s> Lexer<'s> {
    pub fn new(src: &'s str) -> Lexer<'s> {
        Lexer {
            src,
            chars: src.char_indices().peekable(),
            line: 1,
            column: 1,
        }
    }

    fn pos(&mut self) -> Pos {
        let offset = self.chars.peek().map_or(self.src.len(), |(i, _)| *i);
        Pos {
            line: self.line,
            column: self.column,
            offset: offset as u32,
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().map(|(_, c)| *c)
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.chars.clone();
        it.next();
        it.next().map(|(_, c)| c)
    }

    fn bump(&mut self) -> Option<char> {
        let (_, c) = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip_space(&mut self) {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('/') if self.peek2() == Some('/') => {
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                _ => return,
            }
        }
    }

    /// All tokens with where each starts and the byte offset where it ends, then `Eof`.
    pub fn tokens(mut self) -> Result<Vec<(Tok, Pos, u32)>, RuleError> {
        let mut out = Vec::new();
        loop {
            self.skip_space();
            let at = self.pos();
            let Some(c) = self.peek() else {
                out.push((Tok::Eof, at, at.offset));
                return Ok(out);
            };
            let tok = match c {
                '0'..='9' => self.number(at)?,
                '.' if self.peek2().is_some_and(|d| d.is_ascii_digit()) => self.number(at)?,
                '"' | '\'' => {
                    self.bump();
                    Tok::Str(self.string(c, false, at)?)
                }
                'r' | 'R' if matches!(self.peek2(), Some('"' | '\'')) => {
                    self.bump();
                    let q = self.bump().unwrap_or('"');
                    Tok::Str(self.string(q, true, at)?)
                }
                c if c == '_' || c.is_ascii_alphabetic() => self.word(at)?,
                _ => self.symbol(at)?,
            };
            let end = self.pos().offset;
            out.push((tok, at, end));
        }
    }

    fn word(&mut self, at: Pos) -> Result<Tok, RuleError> {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if c == '_' || c.is_ascii_alphanumeric() {
                s.push(c);
                self.bump();
            } else {
                break;
            }
        }
        Ok(match s.as_str() {
            "true" => Tok::True,
            "false" => Tok::False,
            "null" => Tok::Null,
            "in" => Tok::In,
            w if RESERVED.contains(&w) => {
                return Err(RuleError::at(
                    at,
                    format!("`{w}` is a reserved word and cannot be used as a name"),
                ));
            }
            _ => Tok::Ident(s),
        })
    }

    fn number(&mut self, at: Pos) -> Result<Tok, RuleError> {
        let start = at.offset as usize;
        if self.peek() == Some('0') && matches!(self.peek2(), Some('x' | 'X')) {
            self.bump();
            self.bump();
            let mut digits = String::new();
            while let Some(c) = self.peek().filter(char::is_ascii_hexdigit) {
                digits.push(c);
                self.bump();
            }
            let n = u64::from_str_radix(&digits, 16)
                .map_err(|_| RuleError::at(at, "malformed or too large hexadecimal number"))?;
            return self.int_suffix(at, n);
        }
        let mut is_double = false;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        if self.peek() == Some('.') && self.peek2().is_some_and(|c| c.is_ascii_digit()) {
            is_double = true;
            self.bump();
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let mut look = self.chars.clone();
            look.next();
            let mut next = look.next().map(|(_, c)| c);
            if matches!(next, Some('+' | '-')) {
                next = look.next().map(|(_, c)| c);
            }
            if next.is_some_and(|c| c.is_ascii_digit()) {
                is_double = true;
                self.bump();
                if matches!(self.peek(), Some('+' | '-')) {
                    self.bump();
                }
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.bump();
                }
            }
        }
        let end = self.pos().offset as usize;
        let text = &self.src[start..end];
        if is_double {
            let d: f64 = text
                .parse()
                .map_err(|_| RuleError::at(at, format!("malformed number `{text}`")))?;
            if !d.is_finite() {
                return Err(RuleError::at(
                    at,
                    format!("the number `{text}` is too large"),
                ));
            }
            return Ok(Tok::Double(d));
        }
        let n: u64 = text.parse().map_err(|_| {
            RuleError::at(
                at,
                format!("the integer `{text}` is out of range (64-bit signed)"),
            )
        })?;
        self.int_suffix(at, n)
    }

    fn int_suffix(&mut self, at: Pos, n: u64) -> Result<Tok, RuleError> {
        if matches!(self.peek(), Some('u' | 'U')) {
            return Err(RuleError::at(
                at,
                "unsigned integers (`1u`) are not supported; write a plain integer",
            ));
        }
        Ok(Tok::Int(n))
    }

    fn string(&mut self, quote: char, raw: bool, at: Pos) -> Result<String, RuleError> {
        let mut s = String::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(RuleError::at(at, "unterminated string"));
            };
            match c {
                c if c == quote => return Ok(s),
                '\n' => return Err(RuleError::at(at, "unterminated string (end of line)")),
                '\\' if !raw => s.push(self.escape(at)?),
                c => s.push(c),
            }
        }
    }

    fn escape(&mut self, at: Pos) -> Result<char, RuleError> {
        let here = self.pos();
        let Some(c) = self.bump() else {
            return Err(RuleError::at(at, "unterminated string"));
        };
        let hex = |lexer: &mut Self, n: usize| -> Result<char, RuleError> {
            let mut v: u32 = 0;
            for _ in 0..n {
                let d = lexer
                    .bump()
                    .and_then(|c| c.to_digit(16))
                    .ok_or_else(|| RuleError::at(here, "malformed escape sequence"))?;
                v = v * 16 + d;
            }
            char::from_u32(v).ok_or_else(|| RuleError::at(here, "escape is not a character"))
        };
        Ok(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'v' => '\u{b}',
            '\\' | '"' | '\'' | '`' | '?' => c,
            'x' | 'X' => hex(self, 2)?,
            'u' => hex(self, 4)?,
            'U' => hex(self, 8)?,
            '0'..='3' => {
                let mut v = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    let d = self
                        .bump()
                        .and_then(|c| c.to_digit(8))
                        .ok_or_else(|| RuleError::at(here, "malformed octal escape"))?;
                    v = v * 8 + d;
                }
                char::from_u32(v).ok_or_else(|| RuleError::at(here, "escape is not a character"))?
            }
            other => {
                return Err(RuleError::at(
                    here,
                    format!("unknown escape `\\{other}` in a string"),
                ));
            }
        })
    }

    fn symbol(&mut self, at: Pos) -> Result<Tok, RuleError> {
        let c = self.bump().unwrap_or('\0');
        let next = self.peek();
        let two = |lexer: &mut Self, t: Tok| {
            lexer.bump();
            t
        };
        Ok(match (c, next) {
            ('(', _) => Tok::LParen,
            (')', _) => Tok::RParen,
            ('[', _) => Tok::LBracket,
            (']', _) => Tok::RBracket,
            ('{', _) => Tok::LBrace,
            ('}', _) => Tok::RBrace,
            ('.', _) => Tok::Dot,
            (',', _) => Tok::Comma,
            ('?', _) => Tok::Question,
            (':', _) => Tok::Colon,
            ('!', Some('=')) => two(self, Tok::Ne),
            ('!', _) => Tok::Bang,
            ('-', _) => Tok::Minus,
            ('+', _) => Tok::Plus,
            ('*', _) => Tok::Star,
            ('/', _) => Tok::Slash,
            ('%', _) => Tok::Percent,
            ('<', Some('=')) => two(self, Tok::Le),
            ('<', _) => Tok::Lt,
            ('>', Some('=')) => two(self, Tok::Ge),
            ('>', _) => Tok::Gt,
            ('=', Some('=')) => two(self, Tok::EqEq),
            ('=', _) => {
                return Err(RuleError::at(
                    at,
                    "`=` is not an operator here; compare with `==`",
                ));
            }
            ('&', Some('&')) => two(self, Tok::AndAnd),
            ('|', Some('|')) => two(self, Tok::OrOr),
            ('&', _) | ('|', _) => {
                return Err(RuleError::at(
                    at,
                    format!("`{c}` is not an operator; write `{c}{c}`"),
                ));
            }
            (other, _) => {
                return Err(RuleError::at(
                    at,
                    format!("unexpected character `{}`", other.escape_default()),
                ));
            }
        })
    }
}

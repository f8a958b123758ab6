//! A Pratt parser for the condition language. It refuses expressions over
//! [`MAX_EXPR_CHARS`] characters before reading them, and trees deeper than [`MAX_DEPTH`] while
//! reading them, so no input can exhaust the stack.

use super::ast::{BinOp, Expr, ExprKind, Lit, UnOp};
use super::lexer::{Lexer, Pos, Tok};
use super::{MAX_DEPTH, MAX_EXPR_CHARS, RuleError};

/// Parses one expression.
pub fn parse(src: &str) -> Result<Expr, RuleError> {
    let chars = src.chars().count();
    if chars > MAX_EXPR_CHARS {
        return Err(RuleError {
            line: 1,
            column: 1,
            message: format!(
                "the expression is {chars} characters long; the limit is {MAX_EXPR_CHARS}"
            ),
        });
    }
    let tokens = Lexer::new(src).tokens()?;
    let mut p = Parser { tokens, i: 0 };
    let e = p.expr(1)?;
    match p.peek() {
        Tok::Eof => Ok(e),
        other => Err(RuleError::at(
            p.pos(),
            format!(
                "unexpected {} after a complete expression",
                other.describe()
            ),
        )),
    }
}

struct Parser {
    tokens: Vec<(Tok, Pos, u32)>,
    i: usize,
}

fn binop(t: &Tok) -> Option<BinOp> {
    Some(match t {
        Tok::OrOr => BinOp::Or,
        Tok::AndAnd => BinOp::And,
        Tok::EqEq => BinOp::Eq,
        Tok::Ne => BinOp::Ne,
        Tok::Lt => BinOp::Lt,
        Tok::Le => BinOp::Le,
        Tok::Gt => BinOp::Gt,
        Tok::Ge => BinOp::Ge,
        Tok::In => BinOp::In,
        Tok::Plus => BinOp::Add,
        Tok::Minus => BinOp::Sub,
        Tok::Star => BinOp::Mul,
        Tok::Slash => BinOp::Div,
        Tok::Percent => BinOp::Rem,
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.i).map_or(&Tok::Eof, |(t, _, _)| t)
    }
    fn peek_at(&self, k: usize) -> &Tok {
        self.tokens.get(self.i + k).map_or(&Tok::Eof, |(t, _, _)| t)
    }
    fn pos(&self) -> Pos {
        self.tokens
            .get(self.i)
            .or(self.tokens.last())
            .map(|(_, p, _)| *p)
            .unwrap_or_default()
    }
    /// Byte offset where the previous token ended.
    fn prev_end(&self) -> u32 {
        self.i
            .checked_sub(1)
            .and_then(|k| self.tokens.get(k))
            .map_or(0, |(_, _, end)| *end)
    }
    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        self.i += 1;
        t
    }
    fn expect(&mut self, want: Tok, what: &str) -> Result<(), RuleError> {
        if *self.peek() == want {
            self.i += 1;
            Ok(())
        } else {
            Err(RuleError::at(
                self.pos(),
                format!("expected {what}, found {}", self.peek().describe()),
            ))
        }
    }

    fn deep(&self, depth: usize) -> Result<(), RuleError> {
        if depth > MAX_DEPTH {
            return Err(too_deep(self.pos()));
        }
        Ok(())
    }

    fn node(&self, kind: ExprKind, at: Pos, start: u32) -> Result<Expr, RuleError> {
        let end = self.prev_end();
        let e = Expr::new(kind, at, start, end);
        if usize::from(e.height) > MAX_DEPTH {
            return Err(too_deep(at));
        }
        Ok(e)
    }

    /// `Or ["?" Or ":" Expr]`
    fn expr(&mut self, depth: usize) -> Result<Expr, RuleError> {
        self.deep(depth)?;
        let start = self.pos().offset;
        let cond = self.binary(2, depth)?;
        if *self.peek() != Tok::Question {
            return Ok(cond);
        }
        let at = self.pos();
        self.i += 1;
        let then = self.binary(2, depth + 1)?;
        self.expect(Tok::Colon, "`:` of a conditional `a ? b : c`")?;
        let otherwise = self.expr(depth + 1)?;
        self.node(
            ExprKind::Cond(Box::new(cond), Box::new(then), Box::new(otherwise)),
            at,
            start,
        )
    }

    fn binary(&mut self, min_prec: u8, depth: usize) -> Result<Expr, RuleError> {
        self.deep(depth)?;
        let start = self.pos().offset;
        let mut lhs = self.unary(depth)?;
        loop {
            let Some(op) = binop(self.peek()) else {
                return Ok(lhs);
            };
            let prec = op.precedence();
            if prec < min_prec {
                return Ok(lhs);
            }
            let at = self.pos();
            self.i += 1;
            let rhs = self.binary(prec + 1, depth + 1)?;
            lhs = self.node(
                ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                at,
                start,
            )?;
        }
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, RuleError> {
        self.deep(depth)?;
        let at = self.pos();
        match self.peek() {
            Tok::Bang => {
                self.i += 1;
                let e = self.unary(depth + 1)?;
                self.node(ExprKind::Unary(UnOp::Not, Box::new(e)), at, at.offset)
            }
            Tok::Minus => {
                self.i += 1;
                // `-5` is the literal minus five (as in CEL), unless the number is the target
                // of a selection or index (`-1.size()` negates the call).
                let literal = matches!(self.peek(), Tok::Int(_) | Tok::Double(_))
                    && !matches!(self.peek_at(1), Tok::Dot | Tok::LBracket);
                if literal {
                    let lit = match self.next() {
                        Tok::Int(n) if n <= 1u64 << 63 => {
                            Lit::Int((n as i128).wrapping_neg() as i64)
                        }
                        Tok::Int(_) => {
                            return Err(RuleError::at(
                                at,
                                "the integer is out of range (64-bit signed)",
                            ));
                        }
                        Tok::Double(d) => Lit::Double(-d),
                        _ => Lit::Null,
                    };
                    return self.node(ExprKind::Lit(lit), at, at.offset);
                }
                let e = self.unary(depth + 1)?;
                self.node(ExprKind::Unary(UnOp::Neg, Box::new(e)), at, at.offset)
            }
            _ => self.postfix(depth),
        }
    }

    fn postfix(&mut self, depth: usize) -> Result<Expr, RuleError> {
        self.deep(depth)?;
        let start = self.pos().offset;
        let mut e = self.primary(depth)?;
        loop {
            match self.peek() {
                Tok::Dot => {
                    self.i += 1;
                    let at = self.pos();
                    let Tok::Ident(name) = self.next() else {
                        return Err(RuleError::at(
                            at,
                            "expected a field or method name after `.`",
                        ));
                    };
                    if *self.peek() == Tok::LParen {
                        self.i += 1;
                        let args = self.args(Tok::RParen, depth + 1)?;
                        e = self.node(
                            ExprKind::Call {
                                target: Some(Box::new(e)),
                                func: name,
                                args,
                            },
                            at,
                            start,
                        )?;
                    } else {
                        e = self.node(ExprKind::Select(Box::new(e), name), at, start)?;
                    }
                }
                Tok::LBracket => {
                    let at = self.pos();
                    self.i += 1;
                    let index = self.expr(depth + 1)?;
                    self.expect(Tok::RBracket, "`]`")?;
                    e = self.node(ExprKind::Index(Box::new(e), Box::new(index)), at, start)?;
                }
                _ => return Ok(e),
            }
        }
    }

    /// Comma-separated expressions up to `close` (a trailing comma is allowed in lists).
    fn args(&mut self, close: Tok, depth: usize) -> Result<Vec<Expr>, RuleError> {
        let mut out = Vec::new();
        if *self.peek() == close {
            self.i += 1;
            return Ok(out);
        }
        loop {
            out.push(self.expr(depth)?);
            match self.next() {
                Tok::Comma if close == Tok::RBracket && *self.peek() == close => {
                    self.i += 1;
                    return Ok(out);
                }
                Tok::Comma => {}
                t if t == close => return Ok(out),
                other => {
                    self.i -= 1;
                    let want = if close == Tok::RParen {
                        "`,` or `)`"
                    } else {
                        "`,` or `]`"
                    };
                    return Err(RuleError::at(
                        self.pos(),
                        format!("expected {want}, found {}", other.describe()),
                    ));
                }
            }
        }
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, RuleError> {
        self.deep(depth)?;
        let at = self.pos();
        let lit = |p: &Self, l: Lit| p.node(ExprKind::Lit(l), at, at.offset);
        match self.next() {
            Tok::Int(n) => match i64::try_from(n) {
                Ok(v) => lit(self, Lit::Int(v)),
                Err(_) => Err(RuleError::at(
                    at,
                    "the integer is out of range (64-bit signed)",
                )),
            },
            Tok::Double(d) => lit(self, Lit::Double(d)),
            Tok::Str(s) => lit(self, Lit::Str(s)),
            Tok::True => lit(self, Lit::Bool(true)),
            Tok::False => lit(self, Lit::Bool(false)),
            Tok::Null => lit(self, Lit::Null),
            Tok::Ident(name) => {
                if *self.peek() == Tok::LParen {
                    self.i += 1;
                    let args = self.args(Tok::RParen, depth + 1)?;
                    return self.node(
                        ExprKind::Call {
                            target: None,
                            func: name,
                            args,
                        },
                        at,
                        at.offset,
                    );
                }
                self.node(ExprKind::Ident(name), at, at.offset)
            }
            Tok::LParen => {
                let mut e = self.expr(depth + 1)?;
                self.expect(Tok::RParen, "`)`")?;
                // The parentheses belong to the node's source text.
                e.start = at.offset;
                e.end = self.prev_end();
                Ok(e)
            }
            Tok::LBracket => {
                let items = self.args(Tok::RBracket, depth + 1)?;
                self.node(ExprKind::List(items), at, at.offset)
            }
            Tok::LBrace => Err(RuleError::at(at, "map literals `{...}` are not supported")),
            Tok::Dot => Err(RuleError::at(
                at,
                "a name cannot start with `.` (root-scoped names are not supported)",
            )),
            Tok::Eof => Err(RuleError::at(at, "the expression ends too early")),
            other => Err(RuleError::at(
                at,
                format!("unexpected {}", other.describe()),
            )),
        }
    }
}

fn too_deep(at: Pos) -> RuleError {
    RuleError::at(
        at,
        format!(
            "the expression nests deeper than {MAX_DEPTH} levels; split it, or use `x in [...]` instead of long chains of `||`"
        ),
    )
}

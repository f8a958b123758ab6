//! The syntax tree the parser builds. Nodes carry where they start (for errors) and how far they
//! reach (so an explanation can quote the source of a sub-condition); equality ignores both, so
//! the printer's round trip compares shapes only.

use super::lexer::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    Not,
    Neg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    /// Binding strength: higher binds tighter. The conditional `?:` is 1.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 2,
            BinOp::And => 3,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::In => 4,
            BinOp::Add | BinOp::Sub => 5,
            BinOp::Mul | BinOp::Div | BinOp::Rem => 6,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Lit(Lit),
    Ident(String),
    /// `target.field`
    Select(Box<Expr>, String),
    /// `target[index]`
    Index(Box<Expr>, Box<Expr>),
    /// `func(args)` or `target.func(args)` (macros such as `exists` are calls too).
    Call {
        target: Option<Box<Expr>>,
        func: String,
        args: Vec<Expr>,
    },
    List(Vec<Expr>),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `cond ? then : otherwise`
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone)]
pub struct Expr {
    pub kind: ExprKind,
    /// The position an error about this node points at: the operator of a binary or unary
    /// node, the name of a selection or call, the start of anything else.
    pub at: Pos,
    /// Byte range of the node's source text.
    pub start: u32,
    pub end: u32,
    /// Height of the tree below and including this node (a leaf is 1).
    pub height: u16,
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Expr {
    pub fn new(kind: ExprKind, at: Pos, start: u32, end: u32) -> Expr {
        let h = |e: &Expr| e.height;
        let below = match &kind {
            ExprKind::Lit(_) | ExprKind::Ident(_) => 0,
            ExprKind::Select(t, _) | ExprKind::Unary(_, t) => h(t),
            ExprKind::Index(a, b) | ExprKind::Binary(_, a, b) => h(a).max(h(b)),
            ExprKind::Call { target, args, .. } => args
                .iter()
                .map(h)
                .chain(target.as_deref().map(h))
                .max()
                .unwrap_or(0),
            ExprKind::List(items) => items.iter().map(h).max().unwrap_or(0),
            ExprKind::Cond(a, b, c) => h(a).max(h(b)).max(h(c)),
        };
        Expr {
            kind,
            at,
            start,
            end,
            height: below.saturating_add(1),
        }
    }

    /// The source text this node was parsed from.
    pub fn source<'s>(&self, src: &'s str) -> &'s str {
        src.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

//! The rules engine's pure half: the condition language (a subset of the Common Expression
//! Language: lexer, Pratt parser, printer, type checker and closure compiler), the shape of
//! rules and campaigns and their checks, schedules in the programme's time zone, and the
//! evaluation of a rule set against one event (awards, with the caps and budgets the store
//! enforces in its transaction, and an explanation per rule for simulations).
//!
//! The language reference is `docs/RULES.md`.

pub mod ast;
pub mod compile;
pub mod define;
pub mod engine;
pub mod lexer;
pub mod parser;
pub mod printer;
pub mod schedule;
pub mod schema;
pub mod value;

#[cfg(test)]
mod tests;

pub use define::{
    CampaignDef, CampaignRecord, EffectDef, RuleDef, RuleRecord, Stacking, Status, TargetDef,
    TriggerKind,
};
pub use engine::{
    CompiledCampaign, CompiledRule, Evaluation, Input, RuleEvent, RuleSet, RuleTrace,
};

/// Longest condition or line filter, in characters.
pub const MAX_EXPR_CHARS: usize = 4096;
/// Deepest syntax tree (a chain of N `&&` counts N levels).
pub const MAX_DEPTH: usize = 32;
/// Comprehension variables in scope at once (nested `exists`, `all`, `map`, ...).
pub const MAX_BINDINGS: usize = 8;
/// Work one evaluation may do: list elements visited, built or compared, and 64-byte blocks of
/// string work. Over it, the evaluation fails and the rule does not match.
pub const MAX_EVAL_STEPS: u32 = 100_000;

/// A problem in an expression, at a line and column of its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl RuleError {
    pub fn at(pos: lexer::Pos, message: impl Into<String>) -> RuleError {
        RuleError {
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for RuleError {}

/// Parses and compiles a condition (which must be a bool).
pub fn compile_condition(src: &str) -> Result<compile::Compiled, RuleError> {
    compile_bool(src, &compile::Env::condition())
}

/// Parses and compiles an effect's line filter: a bool expression over `line` (and `event`,
/// `member`, `program`).
pub fn compile_line_filter(src: &str) -> Result<compile::Compiled, RuleError> {
    compile_bool(src, &compile::Env::line_filter())
}

fn compile_bool(src: &str, env: &compile::Env) -> Result<compile::Compiled, RuleError> {
    let e = parser::parse(src)?;
    let c = compile::compile(&e, env)?;
    if !matches!(c.ty, schema::Type::Bool | schema::Type::Dyn) {
        return Err(RuleError::at(
            e.at,
            format!("the expression must be true or false, but it is a {}", c.ty),
        ));
    }
    Ok(c)
}

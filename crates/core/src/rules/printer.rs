//! Prints a syntax tree back as source, with the fewest parentheses that keep its shape:
//! `parse(print(e)) == e` for every tree (a property test holds it to that).

use super::ast::{Expr, ExprKind, Lit, UnOp};
use std::fmt::Write;

pub fn print(e: &Expr) -> String {
    let mut out = String::new();
    write_expr(&mut out, e);
    out
}

/// How tightly a node binds: 1 conditional, 2–6 binary operators, 7 unary, 8 member/primary.
fn prec(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Cond(..) => 1,
        ExprKind::Binary(op, ..) => op.precedence(),
        ExprKind::Unary(..) => 7,
        ExprKind::Lit(Lit::Int(n)) if *n < 0 => 7,
        ExprKind::Lit(Lit::Double(d)) if d.is_sign_negative() => 7,
        _ => 8,
    }
}

fn wrapped(out: &mut String, e: &Expr, parens: bool) {
    if parens {
        out.push('(');
        write_expr(out, e);
        out.push(')');
    } else {
        write_expr(out, e);
    }
}

fn write_expr(out: &mut String, e: &Expr) {
    match &e.kind {
        ExprKind::Lit(l) => write_lit(out, l),
        ExprKind::Ident(name) => out.push_str(name),
        ExprKind::Select(target, field) => {
            wrapped(out, target, prec(target) < 8);
            out.push('.');
            out.push_str(field);
        }
        ExprKind::Index(target, index) => {
            wrapped(out, target, prec(target) < 8);
            out.push('[');
            write_expr(out, index);
            out.push(']');
        }
        ExprKind::Call { target, func, args } => {
            if let Some(t) = target {
                wrapped(out, t, prec(t) < 8);
                out.push('.');
            }
            out.push_str(func);
            out.push('(');
            write_list(out, args);
            out.push(')');
        }
        ExprKind::List(items) => {
            out.push('[');
            write_list(out, items);
            out.push(']');
        }
        ExprKind::Unary(op, operand) => {
            out.push(match op {
                UnOp::Not => '!',
                UnOp::Neg => '-',
            });
            // `-(5)` keeps a negation of a literal apart from the literal `-5`.
            let literal_number = matches!(
                operand.kind,
                ExprKind::Lit(Lit::Int(_)) | ExprKind::Lit(Lit::Double(_))
            );
            let parens =
                prec(operand) < 7 || (*op == UnOp::Neg && literal_number && prec(operand) == 8);
            wrapped(out, operand, parens);
        }
        ExprKind::Binary(op, lhs, rhs) => {
            let p = op.precedence();
            wrapped(out, lhs, prec(lhs) < p);
            out.push(' ');
            out.push_str(op.symbol());
            out.push(' ');
            wrapped(out, rhs, prec(rhs) <= p);
        }
        ExprKind::Cond(cond, then, otherwise) => {
            wrapped(out, cond, prec(cond) <= 1);
            out.push_str(" ? ");
            wrapped(out, then, prec(then) <= 1);
            out.push_str(" : ");
            write_expr(out, otherwise);
        }
    }
}

fn write_list(out: &mut String, items: &[Expr]) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_expr(out, item);
    }
}

fn write_lit(out: &mut String, l: &Lit) {
    match l {
        Lit::Null => out.push_str("null"),
        Lit::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Lit::Int(n) => {
            let _ = write!(out, "{n}"); // Writing to a String cannot fail.
        }
        Lit::Double(d) => {
            // `{:?}` is the shortest text that reads back as the same double, and always has a
            // `.` or an exponent, so it reads back as a double.
            let _ = write!(out, "{d:?}"); // Writing to a String cannot fail.
        }
        Lit::Str(s) => write_str(out, s),
    }
}

/// A double-quoted string with escapes for quotes, backslashes and non-printable characters.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\U{:08x}", c as u32); // Writing to a String cannot fail.
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

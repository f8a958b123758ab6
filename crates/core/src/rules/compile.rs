//! The type checker and compiler, in one pass over the syntax tree: every name and field is
//! resolved against the schema (an unknown one is an error with its line and column, and a
//! suggestion), every operator is checked against its operands' types, and each node becomes a
//! closure that reads fields by position. Common shapes (`x == "lit"`, `x in [literals]`,
//! `l.field` on a comprehension variable) get closures of their own.

use super::ast::{BinOp, Expr, ExprKind, Lit, UnOp};
use super::schema::{self, FieldId, Obj, Type};
use super::value::*;
use super::{MAX_BINDINGS, RuleError};
use std::sync::Arc;

/// A compiled expression.
pub type Fun = Box<dyn for<'a> Fn(&mut Frame<'a>) -> R<Val<'a>> + Send + Sync>;

/// A compiled expression and its static type.
pub struct Compiled {
    pub ty: Type,
    pub fun: Fun,
}

/// Names a compilation may see besides `event`, `member` and `program`: a variable bound in
/// slot 0 for the whole expression (`line` in an effect's line filter).
#[derive(Clone)]
pub struct Env {
    pub bound: Option<(&'static str, Type)>,
}

impl Env {
    pub fn condition() -> Env {
        Env { bound: None }
    }
    pub fn line_filter() -> Env {
        Env {
            bound: Some(("line", Type::Obj(Obj::Line))),
        }
    }
}

struct Scope {
    /// Bound variables, innermost last: (name, type, slot).
    vars: Vec<(String, Type, usize)>,
}

pub fn compile(e: &Expr, env: &Env) -> Result<Compiled, RuleError> {
    let mut scope = Scope { vars: Vec::new() };
    if let Some((name, ty)) = &env.bound {
        scope.vars.push(((*name).to_string(), ty.clone(), 0));
    }
    let (ty, fun) = scope.expr(e)?;
    Ok(Compiled { ty, fun })
}

type Out = Result<(Type, Fun), RuleError>;

fn err(e: &Expr, msg: impl Into<String>) -> RuleError {
    RuleError::at(e.at, msg)
}

const ROOTS: [(&str, Obj); 3] = [
    ("event", Obj::Event),
    ("member", Obj::Member),
    ("program", Obj::Program),
];

const FUNCTIONS: &[&str] = &[
    "size",
    "has",
    "int",
    "double",
    "string",
    "exists",
    "all",
    "exists_one",
    "filter",
    "map",
    "startsWith",
    "endsWith",
    "contains",
    "lowerAscii",
    "upperAscii",
];

fn konst(v: Val<'static>) -> Fun {
    Box::new(move |_f| Ok(v.clone()))
}

fn lit_val(l: &Lit) -> (Type, Val<'static>) {
    match l {
        Lit::Null => (Type::Null, Val::Null),
        Lit::Bool(b) => (Type::Bool, Val::Bool(*b)),
        Lit::Int(n) => (Type::Int, Val::Int(*n)),
        Lit::Double(d) => (Type::Double, Val::Double(*d)),
        Lit::Str(s) => (Type::String, Val::Shared(Arc::from(s.as_str()))),
    }
}

/// The value of a constant expression (a literal or a list of them), if it is one.
fn constant(e: &Expr) -> Option<Val<'static>> {
    match &e.kind {
        ExprKind::Lit(l) => Some(lit_val(l).1),
        ExprKind::List(items) => {
            let vals: Option<Vec<Val<'static>>> = items.iter().map(constant).collect();
            vals.map(|v| Val::List(Arc::from(v)))
        }
        _ => None,
    }
}

fn compatible_eq(a: &Type, b: &Type) -> bool {
    a == b
        || matches!(a, Type::Dyn | Type::Null)
        || matches!(b, Type::Dyn | Type::Null)
        || (a.is_numeric() && b.is_numeric())
        || match (a, b) {
            (Type::List(x), Type::List(y)) => compatible_eq(x, y),
            _ => false,
        }
}

fn element(t: &Type) -> Option<Type> {
    match t {
        Type::List(e) => Some((**e).clone()),
        Type::Dyn => Some(Type::Dyn),
        _ => None,
    }
}

/// Reads a field of `event`, `member` or `program`.
#[inline]
fn root_field<'a>(f: &Frame<'a>, id: FieldId) -> Val<'a> {
    use FieldId::*;
    #[inline]
    fn opt(v: Option<&str>) -> Val<'_> {
        v.map_or(Val::Null, Val::Str)
    }
    let (e, m, p) = (f.event, f.member, f.program);
    match id {
        EventKind => Val::Str(e.kind),
        EventType => Val::Str(e.event_type),
        EventTotal => Val::Double(e.total),
        EventTotalMinor => Val::Int(e.total_minor),
        EventCurrency => Val::Str(e.currency),
        EventChannel => opt(e.channel),
        EventStore => opt(e.store),
        EventOrderId => opt(e.order_id),
        EventLines => Val::Lines(&e.lines),
        EventQuantity => Val::Int(e.quantity),
        EventProperties => Val::Map(e.properties),
        EventTime => Val::Str(&e.time),
        EventDate => Val::Str(&e.date),
        EventYear => Val::Int(e.year),
        EventMonth => Val::Int(e.month),
        EventDay => Val::Int(e.day),
        EventHour => Val::Int(e.hour),
        EventMinute => Val::Int(e.minute),
        EventWeekday => Val::Int(e.weekday),
        EventDayName => Val::Str(e.day_name),
        MemberId => opt(m.id),
        MemberTier => opt(m.tier),
        MemberAttributes => Val::Map(m.attributes),
        MemberAge => m.age.map_or(Val::Null, Val::Int),
        MemberDaysSinceEnrolment => Val::Int(m.days_since_enrolment),
        MemberOrderCount => Val::Int(m.order_count),
        MemberLifetimeSpend => Val::Double(m.lifetime_spend),
        MemberLifetimeSpendMinor => Val::Int(m.lifetime_spend_minor),
        MemberBirthdayToday => Val::Bool(m.birthday_today),
        ProgramCurrency => Val::Str(p.currency),
        ProgramPointsName => Val::Str(p.points_name),
        ProgramTimezone => Val::Str(p.timezone),
        ProgramEarnRate => Val::Double(p.earn_rate),
        // Line fields are read through a line value (see `line_field`).
        _ => Val::Null,
    }
}

fn field_fun(id: FieldId) -> Fun {
    Box::new(move |f| Ok(root_field(f, id)))
}

/// A field read without a closure of its own: `event.total`, or `l.category` on a
/// comprehension variable bound to a line. Comparisons of a reader with a literal compile to
/// one closure.
#[derive(Clone, Copy)]
enum Reader {
    Root(FieldId),
    Line(usize, FieldId),
}

impl Reader {
    #[inline]
    fn read<'a>(self, f: &Frame<'a>) -> R<Val<'a>> {
        match self {
            Reader::Root(id) => Ok(root_field(f, id)),
            Reader::Line(slot, id) => match &f.locals[slot] {
                Val::Line(l) => Ok(line_field(l, id)),
                _ => Err(null_target("a line field")),
            },
        }
    }
}

/// `a op b` for a comparison operator, on values.
#[inline]
fn compare_op(op: BinOp, a: &Val<'_>, b: &Val<'_>) -> R<bool> {
    Ok(match op {
        BinOp::Eq => equal(a, b),
        BinOp::Ne => !equal(a, b),
        _ => match compare(a, b)? {
            None => false,
            Some(ord) => match op {
                BinOp::Lt => ord.is_lt(),
                BinOp::Le => ord.is_le(),
                BinOp::Gt => ord.is_gt(),
                _ => ord.is_ge(),
            },
        },
    })
}

#[inline]
fn line_field<'a>(l: &'a LineView<'a>, id: FieldId) -> Val<'a> {
    match id {
        FieldId::LineSku => Val::Str(l.sku),
        FieldId::LineCategory => l.category.map_or(Val::Null, Val::Str),
        FieldId::LineQuantity => Val::Int(l.quantity),
        FieldId::LinePrice => Val::Double(l.price),
        FieldId::LinePriceMinor => Val::Int(l.price_minor),
        FieldId::LineAmount => Val::Double(l.amount),
        FieldId::LineAmountMinor => Val::Int(l.amount_minor),
        _ => Val::Null,
    }
}

fn null_target(what: &'static str) -> EvalError {
    EvalError::new(format!("cannot read `{what}` of null"))
}

/// Reads `key` of a JSON map (missing keys are an error, as in CEL; guard with `has()`), or the
/// element `key` of a JSON array.
fn dyn_index<'a>(target: &Val<'a>, key: &Val<'_>) -> R<Val<'a>> {
    match (target, key) {
        (Val::Map(m), k) => {
            let k = k
                .as_str()
                .ok_or_else(|| EvalError::new("map keys are strings"))?;
            m.get(k)
                .map(Val::from_json)
                .ok_or_else(|| EvalError::new(format!("no key `{k}`")))
        }
        (target, Val::Int(i)) => {
            let items = Items::of(target)?;
            usize::try_from(*i)
                .ok()
                .filter(|i| *i < items.len())
                .map(|i| items.get(i))
                .ok_or_else(|| {
                    EvalError::new(format!("index {i} is out of range (size {})", items.len()))
                })
        }
        (t, k) => Err(EvalError::new(format!(
            "cannot index {} with {}",
            t.type_name(),
            k.type_name()
        ))),
    }
}

impl Scope {
    fn reader(&self, e: &Expr) -> Option<Reader> {
        let ExprKind::Select(target, name) = &e.kind else {
            return None;
        };
        let ExprKind::Ident(root) = &target.kind else {
            return None;
        };
        match self.lookup(root) {
            Some((Type::Obj(Obj::Line), slot)) => {
                schema::field(Obj::Line, name).map(|f| Reader::Line(slot, f.id))
            }
            Some(_) => None,
            None => {
                let (_, obj) = ROOTS.iter().find(|(n, _)| n == root)?;
                schema::field(*obj, name).map(|f| Reader::Root(f.id))
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<(Type, usize)> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _, _)| n == name)
            .map(|(_, t, s)| (t.clone(), *s))
    }

    fn expr(&mut self, e: &Expr) -> Out {
        match &e.kind {
            ExprKind::Lit(l) => {
                let (ty, v) = lit_val(l);
                Ok((ty, konst(v)))
            }
            ExprKind::Ident(name) => self.ident(e, name),
            ExprKind::Select(target, field) => self.select(e, target, field),
            ExprKind::Index(target, index) => self.index(e, target, index),
            ExprKind::Call { target, func, args } => self.call(e, target.as_deref(), func, args),
            ExprKind::List(items) => self.list(e, items),
            ExprKind::Unary(op, operand) => self.unary(e, *op, operand),
            ExprKind::Binary(op, lhs, rhs) => self.binary(e, *op, lhs, rhs),
            ExprKind::Cond(c, a, b) => self.cond(e, c, a, b),
        }
    }

    fn ident(&mut self, e: &Expr, name: &str) -> Out {
        if let Some((ty, slot)) = self.lookup(name) {
            return Ok((ty, Box::new(move |f| Ok(f.locals[slot].clone()))));
        }
        if let Some((_, obj)) = ROOTS.iter().find(|(n, _)| *n == name) {
            let obj = *obj;
            return Ok((Type::Obj(obj), Box::new(move |_f| Ok(Val::Obj(obj)))));
        }
        let known: Vec<&str> = ROOTS
            .iter()
            .map(|(n, _)| *n)
            .chain(self.vars.iter().map(|(n, _, _)| n.as_str()))
            .collect();
        let hint = schema::suggest(name, known.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        Err(err(
            e,
            format!(
                "unknown name `{name}`{hint}; conditions can use {}",
                known
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }

    fn resolve_field(
        &self,
        e: &Expr,
        obj: Obj,
        name: &str,
    ) -> Result<&'static schema::Field, RuleError> {
        schema::field(obj, name).ok_or_else(|| {
            let hint = schema::suggest(name, schema::field_names(obj))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            err(
                e,
                format!("unknown field `{name}` on `{}`{hint}", obj.name()),
            )
        })
    }

    fn select(&mut self, e: &Expr, target: &Expr, name: &str) -> Out {
        // `event.total`: a root object's field, read directly.
        if let ExprKind::Ident(root) = &target.kind {
            if self.lookup(root).is_none()
                && let Some((_, obj)) = ROOTS.iter().find(|(n, _)| n == root)
            {
                let field = self.resolve_field(e, *obj, name)?;
                return Ok((field.ty.clone(), field_fun(field.id)));
            }
            // `l.category` on a comprehension variable bound to a line: no clone of the line.
            if let Some((Type::Obj(Obj::Line), slot)) = self.lookup(root) {
                let field = self.resolve_field(e, Obj::Line, name)?;
                let id = field.id;
                return Ok((
                    field.ty.clone(),
                    Box::new(move |f| match &f.locals[slot] {
                        Val::Line(l) => Ok(line_field(l, id)),
                        _ => Err(null_target("a line field")),
                    }),
                ));
            }
        }
        let (ty, t) = self.expr(target)?;
        match ty {
            Type::Obj(Obj::Line) => {
                let field = self.resolve_field(e, Obj::Line, name)?;
                let id = field.id;
                Ok((
                    field.ty.clone(),
                    Box::new(move |f| match t(f)? {
                        Val::Line(l) => Ok(line_field(l, id)),
                        _ => Err(null_target("a line field")),
                    }),
                ))
            }
            Type::Obj(obj) => {
                // `(event).total` and the like: the object is known statically.
                let field = self.resolve_field(e, obj, name)?;
                Ok((field.ty.clone(), field_fun(field.id)))
            }
            Type::Dyn => {
                let key: Val<'static> = Val::Shared(Arc::from(name));
                Ok((
                    Type::Dyn,
                    Box::new(move |f| {
                        let v = t(f)?;
                        dyn_index(&v, &key)
                    }),
                ))
            }
            other => Err(err(e, format!("cannot read field `{name}` of a {other}"))),
        }
    }

    fn index(&mut self, e: &Expr, target: &Expr, index: &Expr) -> Out {
        let (tt, t) = self.expr(target)?;
        let (it, i) = self.expr(index)?;
        let ty = match (&tt, &it) {
            (Type::List(elem), Type::Int | Type::Dyn) => (**elem).clone(),
            (Type::Dyn, Type::Int | Type::String | Type::Dyn) => Type::Dyn,
            (Type::List(_), other) => {
                return Err(err(e, format!("a list index must be an int, not {other}")));
            }
            (other, _) => return Err(err(e, format!("cannot index a {other}"))),
        };
        Ok((
            ty,
            Box::new(move |f| {
                let target = t(f)?;
                let index = i(f)?;
                dyn_index(&target, &index)
            }),
        ))
    }

    fn list(&mut self, e: &Expr, items: &[Expr]) -> Out {
        let mut funs = Vec::with_capacity(items.len());
        let mut elem: Option<Type> = None;
        for item in items {
            let (ty, fun) = self.expr(item)?;
            elem = Some(match elem {
                None => ty,
                Some(prev) if prev == ty => prev,
                Some(prev) if prev.is_numeric() && ty.is_numeric() => Type::Double,
                Some(_) => Type::Dyn,
            });
            funs.push(fun);
        }
        let ty = Type::list(elem.unwrap_or(Type::Dyn));
        if let Some(v) = constant(e) {
            return Ok((ty, konst(v)));
        }
        Ok((
            ty,
            Box::new(move |f| {
                f.step(funs.len())?;
                let mut out = Vec::with_capacity(funs.len());
                for fun in &funs {
                    out.push(fun(f)?);
                }
                Ok(Val::List(Arc::from(out)))
            }),
        ))
    }

    fn unary(&mut self, e: &Expr, op: UnOp, operand: &Expr) -> Out {
        let (ty, x) = self.expr(operand)?;
        match op {
            UnOp::Not => {
                if !matches!(ty, Type::Bool | Type::Dyn) {
                    return Err(err(e, format!("`!` needs a bool, not {ty}")));
                }
                Ok((
                    Type::Bool,
                    Box::new(move |f| Ok(Val::Bool(!truthy(x(f)?)?))),
                ))
            }
            UnOp::Neg => {
                if !matches!(ty, Type::Int | Type::Double | Type::Dyn) {
                    return Err(err(e, format!("`-` needs a number, not {ty}")));
                }
                Ok((
                    ty,
                    Box::new(move |f| match x(f)? {
                        Val::Int(i) => i
                            .checked_neg()
                            .map(Val::Int)
                            .ok_or_else(|| EvalError::new("integer overflow")),
                        Val::Double(d) => Ok(Val::Double(-d)),
                        other => Err(EvalError::new(format!(
                            "`-` needs a number, not {}",
                            other.type_name()
                        ))),
                    }),
                ))
            }
        }
    }

    /// The operands of a chain of one logical operator, left to right.
    fn chain<'e>(e: &'e Expr, op: BinOp, out: &mut Vec<&'e Expr>) {
        match &e.kind {
            ExprKind::Binary(o, l, r) if *o == op => {
                Self::chain(l, op, out);
                Self::chain(r, op, out);
            }
            _ => out.push(e),
        }
    }

    fn logic(&mut self, e: &Expr, op: BinOp) -> Out {
        let mut parts = Vec::new();
        Self::chain(e, op, &mut parts);
        let mut funs = Vec::with_capacity(parts.len());
        for p in parts {
            let (ty, fun) = self.expr(p)?;
            if !matches!(ty, Type::Bool | Type::Dyn) {
                return Err(err(
                    e,
                    format!("`{}` needs bool operands, not {ty}", op.symbol()),
                ));
            }
            funs.push(fun);
        }
        // CEL's commutative logic: a decisive operand wins over an error in another one.
        let decisive = op == BinOp::Or;
        Ok((
            Type::Bool,
            Box::new(move |f| {
                let mut error = None;
                for fun in &funs {
                    match fun(f).and_then(truthy) {
                        Ok(b) if b == decisive => return Ok(Val::Bool(decisive)),
                        Ok(_) => {}
                        Err(x) => {
                            error.get_or_insert(x);
                        }
                    }
                }
                match error {
                    Some(x) => Err(x),
                    None => Ok(Val::Bool(!decisive)),
                }
            }),
        ))
    }

    fn binary(&mut self, e: &Expr, op: BinOp, lhs: &Expr, rhs: &Expr) -> Out {
        if matches!(op, BinOp::And | BinOp::Or) {
            return self.logic(e, op);
        }
        let (lt, l) = self.expr(lhs)?;
        let (rt, r) = self.expr(rhs)?;
        let comparison = matches!(
            op,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
        );
        if comparison && let (Some(rd), ExprKind::Lit(lit)) = (self.reader(lhs), &rhs.kind) {
            // Checked as usual first, then one closure.
            self.check_comparison(e, op, &lt, &rt)?;
            let (_, b) = lit_val(lit);
            return Ok((
                Type::Bool,
                Box::new(move |f| Ok(Val::Bool(compare_op(op, &rd.read(f)?, &b)?))),
            ));
        }
        match op {
            BinOp::Eq | BinOp::Ne => {
                self.check_comparison(e, op, &lt, &rt)?;
                let want = op == BinOp::Eq;
                // `x == "literal"`: compare borrowed text with the literal, no value built.
                if let ExprKind::Lit(Lit::Str(s)) = &rhs.kind {
                    let lit: Box<str> = s.as_str().into();
                    return Ok((
                        Type::Bool,
                        Box::new(move |f| {
                            let v = l(f)?;
                            let same = match v.as_str() {
                                Some(x) => x == &*lit,
                                None => false,
                            };
                            Ok(Val::Bool(same == want))
                        }),
                    ));
                }
                Ok((
                    Type::Bool,
                    Box::new(move |f| {
                        let a = l(f)?;
                        let b = r(f)?;
                        Ok(Val::Bool(equal(&a, &b) == want))
                    }),
                ))
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                self.check_comparison(e, op, &lt, &rt)?;
                Ok((
                    Type::Bool,
                    Box::new(move |f| {
                        let a = l(f)?;
                        let b = r(f)?;
                        let Some(ord) = compare(&a, &b)? else {
                            return Ok(Val::Bool(false));
                        };
                        Ok(Val::Bool(match op {
                            BinOp::Lt => ord.is_lt(),
                            BinOp::Le => ord.is_le(),
                            BinOp::Gt => ord.is_gt(),
                            _ => ord.is_ge(),
                        }))
                    }),
                ))
            }
            BinOp::In => {
                match &rt {
                    Type::List(elem) if !compatible_eq(&lt, elem) => {
                        return Err(err(e, format!("`in` looks for a {lt} in a list of {elem}")));
                    }
                    Type::List(_) | Type::Dyn => {}
                    other => {
                        return Err(err(
                            e,
                            format!("`in` needs a list (or a map) on its right, not {other}"),
                        ));
                    }
                }
                // `x in ["a", "b"]`: a scan of the literal strings, no list built.
                if let ExprKind::List(items) = &rhs.kind {
                    let strs: Option<Vec<Box<str>>> = items
                        .iter()
                        .map(|i| match &i.kind {
                            ExprKind::Lit(Lit::Str(s)) => Some(s.as_str().into()),
                            _ => None,
                        })
                        .collect();
                    if let (Some(strs), Some(rd)) = (&strs, self.reader(lhs)) {
                        let strs = strs.clone();
                        return Ok((
                            Type::Bool,
                            Box::new(move |f| {
                                let v = rd.read(f)?;
                                Ok(Val::Bool(
                                    v.as_str().is_some_and(|x| strs.iter().any(|s| **s == *x)),
                                ))
                            }),
                        ));
                    }
                    if let Some(strs) = strs {
                        return Ok((
                            Type::Bool,
                            Box::new(move |f| {
                                let v = l(f)?;
                                Ok(Val::Bool(
                                    v.as_str().is_some_and(|x| strs.iter().any(|s| **s == *x)),
                                ))
                            }),
                        ));
                    }
                }
                Ok((
                    Type::Bool,
                    Box::new(move |f| {
                        let a = l(f)?;
                        let b = r(f)?;
                        Ok(Val::Bool(contains(f, &a, &b)?))
                    }),
                ))
            }
            _ => self.arith(e, op, lt, rt, l, r),
        }
    }

    fn check_comparison(&self, e: &Expr, op: BinOp, lt: &Type, rt: &Type) -> Result<(), RuleError> {
        if matches!(op, BinOp::Eq | BinOp::Ne) {
            if !compatible_eq(lt, rt) {
                return Err(err(
                    e,
                    format!("`{}` cannot compare {lt} with {rt}", op.symbol()),
                ));
            }
            return Ok(());
        }
        let ok = (lt.is_numeric() || *lt == Type::Dyn) && (rt.is_numeric() || *rt == Type::Dyn)
            || (matches!(lt, Type::String | Type::Dyn) && matches!(rt, Type::String | Type::Dyn))
            || (*lt == Type::Bool && *rt == Type::Bool);
        if !ok {
            return Err(err(
                e,
                format!("`{}` cannot order {lt} and {rt}", op.symbol()),
            ));
        }
        Ok(())
    }

    fn arith(&mut self, e: &Expr, op: BinOp, lt: Type, rt: Type, l: Fun, r: Fun) -> Out {
        let ty = match (&lt, &rt) {
            (Type::Int, Type::Int) => Type::Int,
            (a, b) if a.is_numeric() && b.is_numeric() => {
                if op == BinOp::Rem {
                    return Err(err(e, "`%` works on integers only"));
                }
                Type::Double
            }
            (Type::String, Type::String) if op == BinOp::Add => Type::String,
            (Type::List(a), Type::List(b)) if op == BinOp::Add => {
                Type::list(if a == b { (**a).clone() } else { Type::Dyn })
            }
            (Type::Dyn, _) | (_, Type::Dyn) => Type::Dyn,
            (a, b) => {
                return Err(err(
                    e,
                    format!("`{}` cannot combine {a} and {b}", op.symbol()),
                ));
            }
        };
        let op = match op {
            BinOp::Add => Arith::Add,
            BinOp::Sub => Arith::Sub,
            BinOp::Mul => Arith::Mul,
            BinOp::Div => Arith::Div,
            _ => Arith::Rem,
        };
        Ok((
            ty,
            Box::new(move |f| {
                let a = l(f)?;
                let b = r(f)?;
                arith(f, &op, a, b)
            }),
        ))
    }

    fn cond(&mut self, e: &Expr, c: &Expr, a: &Expr, b: &Expr) -> Out {
        let (ct, cf) = self.expr(c)?;
        if !matches!(ct, Type::Bool | Type::Dyn) {
            return Err(err(
                e,
                format!("the condition of `?:` must be a bool, not {ct}"),
            ));
        }
        let (at, af) = self.expr(a)?;
        let (bt, bf) = self.expr(b)?;
        let ty = match (&at, &bt) {
            (x, y) if x == y => at.clone(),
            (Type::Null, y) => y.clone(),
            (x, Type::Null) => x.clone(),
            (Type::Dyn, _) | (_, Type::Dyn) => Type::Dyn,
            (x, y) if x.is_numeric() && y.is_numeric() => Type::Double,
            (x, y) => {
                return Err(err(
                    e,
                    format!("the branches of `?:` have different types: {x} and {y}"),
                ));
            }
        };
        Ok((
            ty,
            Box::new(move |f| if truthy(cf(f)?)? { af(f) } else { bf(f) }),
        ))
    }

    fn arity(e: &Expr, func: &str, args: &[Expr], n: usize) -> Result<(), RuleError> {
        if args.len() != n {
            return Err(err(
                e,
                format!(
                    "`{func}` takes {n} argument{}, got {}",
                    if n == 1 { "" } else { "s" },
                    args.len()
                ),
            ));
        }
        Ok(())
    }

    fn call(&mut self, e: &Expr, target: Option<&Expr>, func: &str, args: &[Expr]) -> Out {
        match (func, target) {
            ("has", None) => {
                Self::arity(e, func, args, 1)?;
                self.has(e, &args[0])
            }
            ("size", None) => {
                Self::arity(e, func, args, 1)?;
                self.size(e, &args[0])
            }
            ("size", Some(t)) => {
                Self::arity(e, func, args, 0)?;
                self.size(e, t)
            }
            ("int" | "double" | "string", None) => {
                Self::arity(e, func, args, 1)?;
                self.convert(e, func, &args[0])
            }
            ("exists" | "all" | "exists_one" | "filter" | "map", Some(t)) => {
                Self::arity(e, func, args, 2)?;
                self.comprehension(e, func, t, &args[0], &args[1])
            }
            ("startsWith" | "endsWith" | "contains", Some(t)) => {
                Self::arity(e, func, args, 1)?;
                self.string_test(e, func, t, &args[0])
            }
            ("lowerAscii" | "upperAscii", Some(t)) => {
                Self::arity(e, func, args, 0)?;
                let (ty, x) = self.expr(t)?;
                if !matches!(ty, Type::String | Type::Dyn) {
                    return Err(err(e, format!("`{func}` works on a string, not {ty}")));
                }
                let upper = func == "upperAscii";
                Ok((
                    Type::String,
                    Box::new(move |f| {
                        let v = x(f)?;
                        let s = v
                            .as_str()
                            .ok_or_else(|| EvalError::new("expected a string"))?;
                        f.step(s.len() / 64 + 1)?;
                        let out = if upper {
                            s.to_ascii_uppercase()
                        } else {
                            s.to_ascii_lowercase()
                        };
                        Ok(Val::Shared(Arc::from(out)))
                    }),
                ))
            }
            (name, _) => {
                let hint = schema::suggest(name, FUNCTIONS.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                let how = if target.is_some() {
                    "method"
                } else {
                    "function"
                };
                Err(err(
                    e,
                    format!(
                        "unknown {how} `{name}`{hint}; see the language reference for the functions there are"
                    ),
                ))
            }
        }
    }

    fn has(&mut self, e: &Expr, arg: &Expr) -> Out {
        let ExprKind::Select(target, name) = &arg.kind else {
            return Err(err(
                e,
                "`has()` takes a field selection such as `has(event.store)`",
            ));
        };
        let (tt, t) = self.expr(target)?;
        match tt {
            Type::Obj(obj) => {
                let field = self.resolve_field(arg, obj, name)?;
                let nullable = field.nullable;
                let read = self.expr(arg)?.1;
                Ok((
                    Type::Bool,
                    Box::new(move |f| {
                        if !nullable {
                            return Ok(Val::Bool(true));
                        }
                        Ok(Val::Bool(!matches!(read(f)?, Val::Null)))
                    }),
                ))
            }
            Type::Dyn => {
                let key: Box<str> = name.as_str().into();
                Ok((
                    Type::Bool,
                    Box::new(move |f| match t(f)? {
                        Val::Map(m) => Ok(Val::Bool(m.contains_key(&*key))),
                        other => Err(EvalError::new(format!(
                            "`has()` needs a map, got {}",
                            other.type_name()
                        ))),
                    }),
                ))
            }
            other => Err(err(e, format!("`has()` cannot look into a {other}"))),
        }
    }

    fn size(&mut self, e: &Expr, arg: &Expr) -> Out {
        // `size(x.filter(v, p))` counts, without building the filtered list.
        if let ExprKind::Call {
            target: Some(range),
            func,
            args,
        } = &arg.kind
            && func == "filter"
            && args.len() == 2
        {
            let (_, count) = self.comprehension(arg, "count", range, &args[0], &args[1])?;
            return Ok((Type::Int, count));
        }
        let (ty, x) = self.expr(arg)?;
        if !matches!(ty, Type::String | Type::List(_) | Type::Dyn) {
            return Err(err(
                e,
                format!("`size` works on a string or a list, not {ty}"),
            ));
        }
        Ok((
            Type::Int,
            Box::new(move |f| {
                let v = x(f)?;
                let n = match &v {
                    Val::Map(m) => m.len(),
                    v => match v.as_str() {
                        Some(s) => s.chars().count(),
                        None => Items::of(v)?.len(),
                    },
                };
                Ok(Val::Int(i64::try_from(n).unwrap_or(i64::MAX)))
            }),
        ))
    }

    fn convert(&mut self, e: &Expr, func: &str, arg: &Expr) -> Out {
        let (ty, x) = self.expr(arg)?;
        let fine = match func {
            "string" => matches!(
                ty,
                Type::Int | Type::Double | Type::String | Type::Bool | Type::Dyn
            ),
            _ => matches!(ty, Type::Int | Type::Double | Type::String | Type::Dyn),
        };
        if !fine {
            return Err(err(e, format!("`{func}` cannot convert a {ty}")));
        }
        match func {
            "int" => Ok((
                Type::Int,
                Box::new(move |f| match x(f)? {
                    Val::Int(i) => Ok(Val::Int(i)),
                    // In range and not NaN: the truncated value fits.
                    Val::Double(d)
                        if d.is_finite()
                            && d > -9.223_372_036_854_776e18
                            && d < 9.223_372_036_854_776e18 =>
                    {
                        Ok(Val::Int(d.trunc() as i64))
                    }
                    v => match v.as_str() {
                        Some(s) => s
                            .trim()
                            .parse()
                            .map(Val::Int)
                            .map_err(|_| EvalError::new("the string is not an integer")),
                        None => Err(EvalError::new(format!(
                            "cannot convert {} to int",
                            v.type_name()
                        ))),
                    },
                }),
            )),
            "double" => Ok((
                Type::Double,
                Box::new(move |f| match x(f)? {
                    Val::Int(i) => Ok(Val::Double(i as f64)),
                    Val::Double(d) => Ok(Val::Double(d)),
                    v => match v.as_str() {
                        Some(s) => s
                            .trim()
                            .parse()
                            .map(Val::Double)
                            .map_err(|_| EvalError::new("the string is not a number")),
                        None => Err(EvalError::new(format!(
                            "cannot convert {} to double",
                            v.type_name()
                        ))),
                    },
                }),
            )),
            _ => Ok((
                Type::String,
                Box::new(move |f| {
                    let v = x(f)?;
                    let s = match &v {
                        Val::Int(i) => i.to_string(),
                        Val::Double(d) => d.to_string(),
                        Val::Bool(b) => b.to_string(),
                        v => match v.as_str() {
                            Some(s) => return Ok(Val::Shared(Arc::from(s))),
                            None => {
                                return Err(EvalError::new(format!(
                                    "cannot convert {} to string",
                                    v.type_name()
                                )));
                            }
                        },
                    };
                    Ok(Val::Shared(Arc::from(s)))
                }),
            )),
        }
    }

    fn string_test(&mut self, e: &Expr, func: &str, target: &Expr, arg: &Expr) -> Out {
        let (tt, t) = self.expr(target)?;
        let (at, a) = self.expr(arg)?;
        if !matches!(tt, Type::String | Type::Dyn) || !matches!(at, Type::String | Type::Dyn) {
            return Err(err(
                e,
                format!("`{func}` works on strings, not {tt} and {at}"),
            ));
        }
        let which = match func {
            "startsWith" => 0,
            "endsWith" => 1,
            _ => 2,
        };
        Ok((
            Type::Bool,
            Box::new(move |f| {
                let s = t(f)?;
                let p = a(f)?;
                let (Some(s), Some(p)) = (s.as_str(), p.as_str()) else {
                    return Err(EvalError::new("expected strings"));
                };
                f.step(s.len() / 64 + 1)?;
                Ok(Val::Bool(match which {
                    0 => s.starts_with(p),
                    1 => s.ends_with(p),
                    _ => s.contains(p),
                }))
            }),
        ))
    }

    fn comprehension(
        &mut self,
        e: &Expr,
        func: &str,
        range: &Expr,
        var: &Expr,
        body: &Expr,
    ) -> Out {
        let counting = func == "count";
        let func = if counting { "filter" } else { func };
        let ExprKind::Ident(name) = &var.kind else {
            return Err(err(
                var,
                format!(
                    "the first argument of `{func}` must be a variable name, as in `{func}(l, ...)`"
                ),
            ));
        };
        if ROOTS.iter().any(|(r, _)| r == name) {
            return Err(err(
                var,
                format!("`{name}` cannot be used as a variable name"),
            ));
        }
        let (rt, r) = self.expr(range)?;
        let Some(elem) = element(&rt) else {
            return Err(err(e, format!("`{func}` works on a list, not {rt}")));
        };
        let slot = self.vars.iter().map(|(_, _, s)| s + 1).max().unwrap_or(0);
        if slot >= MAX_BINDINGS {
            return Err(err(
                e,
                format!("comprehensions nest more than {MAX_BINDINGS} deep"),
            ));
        }
        self.vars.push((name.clone(), elem.clone(), slot));
        let body_out = self.expr(body);
        self.vars.pop();
        let (bt, b) = body_out?;
        let predicate = func != "map";
        if predicate && !matches!(bt, Type::Bool | Type::Dyn) {
            return Err(err(
                body,
                format!("the predicate of `{func}` must be a bool, not {bt}"),
            ));
        }
        let kind = match func {
            _ if counting => Comp::Count,
            "exists" => Comp::Exists,
            "all" => Comp::All,
            "exists_one" => Comp::ExistsOne,
            "filter" => Comp::Filter,
            _ => Comp::Map,
        };
        let ty = match kind {
            Comp::Count => Type::Int,
            Comp::Filter => Type::list(elem),
            Comp::Map => Type::list(bt),
            _ => Type::Bool,
        };
        if matches!(self.reader(range), Some(Reader::Root(FieldId::EventLines)))
            && matches!(kind, Comp::Exists | Comp::All)
        {
            // The most common shape, `event.lines.exists(l, ...)`: walk the lines directly.
            let want = matches!(kind, Comp::Exists);
            return Ok((
                ty,
                Box::new(move |f| {
                    let lines: &[LineView<'_>] = &f.event.lines;
                    f.step(lines.len())?;
                    let mut error = None;
                    for line in lines {
                        f.locals[slot] = Val::Line(line);
                        match b(f).and_then(truthy) {
                            Ok(v) if v == want => return Ok(Val::Bool(want)),
                            Ok(_) => {}
                            Err(x) => {
                                error.get_or_insert(x);
                            }
                        }
                    }
                    match error {
                        Some(x) => Err(x),
                        None => Ok(Val::Bool(!want)),
                    }
                }),
            ));
        }
        Ok((
            ty,
            Box::new(move |f| run_comprehension(f, &kind, &r, &b, slot)),
        ))
    }
}

enum Comp {
    /// `size(x.filter(v, p))`.
    Count,
    Exists,
    All,
    ExistsOne,
    Filter,
    Map,
}

fn run_comprehension<'a>(
    f: &mut Frame<'a>,
    kind: &Comp,
    range: &Fun,
    body: &Fun,
    slot: usize,
) -> R<Val<'a>> {
    let items = Items::of(&range(f)?)?;
    let n = items.len();
    f.step(n)?;
    let mut error = None;
    let mut count = 0usize;
    let mut out = if matches!(kind, Comp::Map | Comp::Filter) {
        Vec::with_capacity(n)
    } else {
        Vec::new()
    };
    for i in 0..n {
        let item = items.get(i);
        f.locals[slot] = item.clone();
        let r = body(f);
        match kind {
            Comp::Map => out.push(r?),
            Comp::Filter => {
                if truthy(r?)? {
                    out.push(item);
                }
            }
            Comp::Count => {
                if truthy(r?)? {
                    count += 1;
                }
            }
            _ => match r.and_then(truthy) {
                Ok(true) => {
                    count += 1;
                    match kind {
                        Comp::Exists => return Ok(Val::Bool(true)),
                        Comp::ExistsOne if count > 1 => return Ok(Val::Bool(false)),
                        _ => {}
                    }
                }
                Ok(false) => {
                    if let Comp::All = kind {
                        return Ok(Val::Bool(false));
                    }
                }
                Err(x) => {
                    error.get_or_insert(x);
                }
            },
        }
    }
    if let Some(x) = error {
        return Err(x);
    }
    Ok(match kind {
        Comp::Exists => Val::Bool(false),
        Comp::All => Val::Bool(true),
        Comp::ExistsOne => Val::Bool(count == 1),
        Comp::Count => Val::Int(i64::try_from(count).unwrap_or(i64::MAX)),
        _ => Val::List(Arc::from(out)),
    })
}

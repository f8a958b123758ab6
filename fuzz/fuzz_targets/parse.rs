//! Any bytes, as a condition: the parser, the printer's round trip, the type checker (for
//! conditions and for line filters) and the compiled closure must never panic, and a parsed
//! expression must print to source that parses back to the same tree.

#![no_main]

use fidelis_core::rules::{compile, parser, printer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tree) = parser::parse(src) else {
        return;
    };
    let printed = printer::print(&tree);
    assert_eq!(
        parser::parse(&printed).ok(),
        Some(tree.clone()),
        "{src:?} printed as {printed:?}"
    );
    for env in [compile::Env::condition(), compile::Env::line_filter()] {
        let _ = compile::compile(&tree, &env);
    }
});

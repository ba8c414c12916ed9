//! Trigger logic without I/O: variables from stats, and template rendering.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use triggers::Variables;

/// Variables from stats must stay linear in the number of bindings.
fn variables_from_stats(c: &mut Criterion) {
    let mut group = c.benchmark_group("variables_from_stats");
    for bindings in [1, 10, 100] {
        let materialization = benches::materialization(bindings);
        let stats = benches::stats(bindings);
        group.throughput(Throughput::Elements(bindings as u64));
        group.bench_with_input(BenchmarkId::from_parameter(bindings), &stats, |b, stats| {
            b.iter(|| Variables::from_stats(&materialization, black_box(stats), "run".into()))
        });
    }
    group.finish();
}

/// Our render path (the context built from the variables, then our strict registry) beside
/// bare handlebars rendering the same template from the same variables, and, for
/// information, serde_json serialising them.
fn render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    let triggers = benches::triggers("https://example.com/hook", 1);
    let variables = Variables::from_stats(
        &benches::materialization(10),
        &benches::stats(10),
        "run".into(),
    )
    .expect("valid")
    .expect("has documents");

    group.bench_function("ours", |b| {
        b.iter(|| {
            triggers
                .render(0, black_box(&variables), "msg_0")
                .expect("renders")
        })
    });

    let mut bare = handlebars::Handlebars::new();
    bare.register_escape_fn(handlebars::no_escape);
    bare.register_helper("json", Box::new(benches::json_helper));
    bare.register_template_string("t", benches::TEMPLATE)
        .expect("compiles");
    group.bench_function("bare_handlebars", |b| {
        b.iter(|| bare.render("t", black_box(&variables)).expect("renders"))
    });

    group.bench_function("serde_json_floor", |b| {
        b.iter(|| serde_json::to_string(black_box(&variables)).expect("serialises"))
    });
    group.finish();
}

criterion_group!(benches, variables_from_stats, render);
criterion_main!(benches);

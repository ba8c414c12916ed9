//! Delivery to a receiver on 127.0.0.1: our whole path (render, send, classify) against a
//! bare reqwest POST of the same body on a warm connection; sequential throughput; and 16
//! triggers fanned out against one, with a receiver that answers after 20 ms.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::time::{Duration, Instant};
use triggers::{Deliverer, NetworkPolicy, RetryBackoff, Variables};
use triggers_receiver::{Receiver, Reply};

fn variables() -> Variables {
    Variables::from_stats(
        &benches::materialization(10),
        &benches::stats(10),
        "run".into(),
    )
    .expect("valid")
    .expect("has documents")
}

fn deliver(c: &mut Criterion) {
    // One thread for client and receiver alike: on a shared 2-core machine, cross-thread
    // wakeups of a multi-threaded runtime dominated and swamped the ratios with noise.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let receiver = runtime.block_on(Receiver::start()).expect("receiver");
    // Keeping a million requests would make the receiver, not the client, the measurement.
    receiver.forget_requests();
    let url = receiver.url("/hook");
    let triggers = benches::triggers(&url, 1);
    let variables = variables();
    let deliverer = Deliverer::with_policy(RetryBackoff::default(), NetworkPolicy::ALLOW_LOOPBACK)
        .expect("client");
    let body = triggers
        .render(
            0,
            &variables,
            &triggers::webhook_id(&variables.flow_run_id, 0),
        )
        .expect("renders");
    let bare = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let post = |client: &reqwest::Client| {
        let request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone());
        async move {
            let response = request.send().await.expect("sends");
            assert!(response.status().is_success());
            response.bytes().await.expect("reads");
        }
    };

    // The composite floor: bare Handlebars rendering the same template, then the bare POST.
    let mut handlebars = handlebars::Handlebars::new();
    handlebars.register_escape_fn(handlebars::no_escape);
    handlebars.register_helper("json", Box::new(benches::json_helper));
    handlebars
        .register_template_string("t", benches::TEMPLATE)
        .expect("compiles");
    let render_and_post = |client: &reqwest::Client| {
        let body = handlebars.render("t", &variables).expect("renders");
        let request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let response = request.send().await.expect("sends");
            assert!(response.status().is_success());
            response.bytes().await.expect("reads");
        }
    };

    let mut group = c.benchmark_group("deliver_one");
    group.bench_function("ours", |b| {
        b.to_async(&runtime).iter(|| async {
            deliverer
                .deliver(&triggers, &variables)
                .await
                .expect("delivers")
        })
    });
    group.bench_function("bare_reqwest", |b| {
        b.to_async(&runtime).iter(|| post(&bare))
    });
    group.bench_function("bare_render_and_reqwest", |b| {
        b.to_async(&runtime).iter(|| render_and_post(&bare))
    });
    group.finish();

    const SEQUENTIAL: u64 = 50;
    let mut group = c.benchmark_group("deliver_sequential");
    group.throughput(Throughput::Elements(SEQUENTIAL));
    group.bench_function("ours", |b| {
        b.to_async(&runtime).iter(|| async {
            for _ in 0..SEQUENTIAL {
                deliverer
                    .deliver(&triggers, &variables)
                    .await
                    .expect("delivers");
            }
        })
    });
    group.bench_function("bare_reqwest", |b| {
        b.to_async(&runtime).iter(|| async {
            for _ in 0..SEQUENTIAL {
                post(&bare).await;
            }
        })
    });
    // Information: bare reqwest with the per-attempt timeout every webhook needs.
    let timed = |client: &reqwest::Client| {
        let request = client
            .post(&url)
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(30))
            .body(body.clone());
        async move {
            let response = request.send().await.expect("sends");
            assert!(response.status().is_success());
            response.bytes().await.expect("reads");
        }
    };
    group.bench_function("bare_reqwest_with_timeout", |b| {
        b.to_async(&runtime).iter(|| async {
            for _ in 0..SEQUENTIAL {
                timed(&bare).await;
            }
        })
    });
    group.finish();

    // Paired: blocks of deliveries alternate between our path and the bare POST, so both
    // meet the same loopback latency (which drifts between criterion's separate runs).
    // Their time per delivery is also the inverse of sequential throughput.
    const BLOCKS: usize = 200;
    const PER_BLOCK: u32 = 50;
    let paired = runtime.block_on(async {
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        for block in 0..BLOCKS {
            // Alternate which goes first, so neither always runs on the other's heels.
            for ours_now in [block % 2 == 0, block % 2 == 1] {
                let started = Instant::now();
                for _ in 0..PER_BLOCK {
                    if ours_now {
                        deliverer
                            .deliver(&triggers, &variables)
                            .await
                            .expect("delivers");
                    } else {
                        post(&bare).await;
                    }
                }
                let per_delivery = started.elapsed() / PER_BLOCK;
                if ours_now {
                    ours.push(per_delivery);
                } else {
                    floor.push(per_delivery);
                }
            }
        }
        benches::Paired::from_blocks(ours, floor)
    });
    println!(
        "deliver_paired ({BLOCKS} alternating blocks of {PER_BLOCK} deliveries): ours {:.1} us, \
         bare reqwest {:.1} us per delivery, time ratio {:.3} (throughput {:.3}x)",
        paired.ours.as_secs_f64() * 1e6,
        paired.floor.as_secs_f64() * 1e6,
        paired.ratio(),
        1.0 / paired.ratio(),
    );
    paired.save("deliver_paired");

    // Paired: a trigger with `auth` whose token is cached against the same trigger
    // sending the same token as a fixed `Authorization` header: what the token cache adds
    // to a delivery once it has a token (one token request, made before the blocks,
    // serves them all).
    receiver.script(
        "/token",
        [Reply::status(201).with_body(r#"{"access_token": "bench-token", "expires_in": 86400}"#)],
    );
    let config = serde_json::json!({"config": [{
        "url": url, "payloadTemplate": benches::TEMPLATE, "maxRetries": 0,
        "auth": {"type": "tokenEndpoint", "url": receiver.url("/token"),
                 "username": "bench", "password": "bench"},
    }]});
    let with_auth = triggers::validate(&config.to_string(), triggers::ConfigFormat::Json)
        .expect("valid config");
    // Today's way to send the same token: a fixed header.
    let config = serde_json::json!({"config": [{
        "url": url, "payloadTemplate": benches::TEMPLATE, "maxRetries": 0,
        "headers": {"Authorization": "Bearer bench-token"},
    }]});
    let with_header = triggers::validate(&config.to_string(), triggers::ConfigFormat::Json)
        .expect("valid config");
    runtime
        .block_on(deliverer.deliver(&with_auth, &variables))
        .expect("fetches the token and delivers");
    let auth_paired = runtime.block_on(async {
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        for block in 0..BLOCKS {
            for ours_now in [block % 2 == 0, block % 2 == 1] {
                let which = if ours_now { &with_auth } else { &with_header };
                let started = Instant::now();
                for _ in 0..PER_BLOCK {
                    deliverer
                        .deliver(which, &variables)
                        .await
                        .expect("delivers");
                }
                let per_delivery = started.elapsed() / PER_BLOCK;
                if ours_now {
                    ours.push(per_delivery);
                } else {
                    floor.push(per_delivery);
                }
            }
        }
        benches::Paired::from_blocks(ours, floor)
    });
    println!(
        "token_auth_paired ({BLOCKS} alternating blocks of {PER_BLOCK} deliveries): cached token \
         {:.1} us, fixed header {:.1} us per delivery, time ratio {:.3}",
        auth_paired.ours.as_secs_f64() * 1e6,
        auth_paired.floor.as_secs_f64() * 1e6,
        auth_paired.ratio(),
    );
    auth_paired.save("token_auth_paired");

    // A slow endpoint: fanning 16 triggers out costs about as much as one.
    let slow = runtime.block_on(Receiver::start()).expect("receiver");
    slow.forget_requests();
    slow.set_default(Reply::status(200).after(Duration::from_millis(20)));
    let one = benches::triggers(&slow.url("/slow"), 1);
    let sixteen = benches::triggers(&slow.url("/slow"), 16);
    let mut group = c.benchmark_group("fan_out_20ms");
    group.sample_size(30);
    group.bench_function("one_trigger", |b| {
        b.to_async(&runtime)
            .iter(|| async { deliverer.deliver(&one, &variables).await.expect("delivers") })
    });
    group.bench_function("sixteen_triggers", |b| {
        b.to_async(&runtime).iter(|| async {
            deliverer
                .deliver(&sixteen, &variables)
                .await
                .expect("delivers")
        })
    });
    group.finish();
}

criterion_group!(benches, deliver);
criterion_main!(benches);

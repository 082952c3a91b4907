//! `cortex bench`: every scenario runs end to end at a tiny size on both engines and reports its figures
//! as JSON (the figures themselves are never asserted: speed goals live in the benchmark, not in tests).

use serde_json::Value;

use crate::process::cortex;

/// Runs `cortex bench <args> --json` and returns the parsed report.
fn bench(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let mut command = cortex(dir.path());
    command.arg("bench").args(args).arg("--json");
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "cortex bench {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!("cortex bench {args:?} printed no JSON ({err}): {}", String::from_utf8_lossy(&output.stdout))
    })
}

/// The engine arguments of every run: SQLite, and PostgreSQL unless the suite skips it.
fn engines() -> Vec<Vec<String>> {
    let mut engines = vec![vec!["--engine".to_owned(), "sqlite".to_owned()]];
    if !cortex_testkit::skip_postgres() {
        engines.push(vec![
            "--engine".to_owned(),
            "postgres".to_owned(),
            "--database-url".to_owned(),
            cortex_testkit::pg_admin_url(),
        ]);
    }
    engines
}

/// Checks the report's header and that every expected figure is there and positive.
fn assert_figures(report: &Value, scenario: &str, expected: &[&str]) {
    assert_eq!(report["scenario"], scenario, "{report}");
    assert!(report["cores"].as_u64().unwrap_or(0) >= 1, "{report}");
    let figures = report["figures"].as_array().unwrap();
    for name in expected {
        let figure = figures.iter().find(|f| f["name"] == *name).unwrap_or_else(|| panic!("no {name} in {report}"));
        assert!(figure["value"].as_f64().unwrap() > 0.0, "{name} is not positive in {report}");
    }
}

#[test]
fn queue_scenario_reports_every_figure() {
    for engine in engines() {
        let mut args = vec!["queue", "--jobs", "40"];
        args.extend(engine.iter().map(String::as_str));
        let report = bench(&args);
        assert_eq!(report["engine"], engine[1], "{report}");
        assert_figures(
            &report,
            "queue",
            &[
                "enqueue_jobs_per_second",
                "process_concurrency_1_jobs_per_second",
                "process_concurrency_16_jobs_per_second",
                "process_concurrency_64_jobs_per_second",
                "latency_p50_ms",
                "latency_p99_ms",
            ],
        );
    }
}

#[test]
fn chat_scenario_reports_every_figure() {
    for engine in engines() {
        let mut args = vec!["chat", "--turns", "4", "--concurrency", "2"];
        args.extend(engine.iter().map(String::as_str));
        let report = bench(&args);
        assert_figures(&report, "chat", &["turn_p50_ms", "turn_p99_ms", "turn_mean_ms", "turn_max_ms"]);
    }
    // A model that thinks: its time is taken off each sample, what is left is still there.
    let report = bench(&["chat", "--turns", "4", "--concurrency", "2", "--model-latency-ms", "30"]);
    assert_figures(&report, "chat", &["turn_p50_ms", "turn_p99_ms", "turn_mean_ms", "turn_max_ms"]);
}

#[test]
fn startup_scenario_reports_every_figure() {
    for engine in engines() {
        let mut args = vec!["startup", "--rounds", "2", "--idle-ms", "0"];
        args.extend(engine.iter().map(String::as_str));
        let report = bench(&args);
        assert_figures(
            &report,
            "startup",
            &["ready_min_ms", "ready_median_ms", "ready_max_ms", "idle_rss_median_mib", "idle_rss_max_mib"],
        );
    }
}

#[test]
fn ui_scenario_reports_every_figure() {
    for engine in engines() {
        let mut args = vec!["ui", "--rounds", "3"];
        args.extend(engine.iter().map(String::as_str));
        let report = bench(&args);
        assert_figures(
            &report,
            "ui",
            &[
                "agents_p50_ms",
                "agents_p95_ms",
                "jobs_p50_ms",
                "jobs_p95_ms",
                "memory_p50_ms",
                "memory_p95_ms",
                "sessions_p50_ms",
                "sessions_p95_ms",
            ],
        );
    }
}

#[test]
fn spike_scenario_reports_every_figure() {
    for engine in engines() {
        let mut args = vec![
            "spike",
            "--agents",
            "3",
            "--parallel",
            "2",
            "--rounds",
            "2",
            "--connections",
            "5",
            "--settle-ms",
            "0",
        ];
        args.extend(engine.iter().map(String::as_str));
        let report = bench(&args);
        assert_figures(&report, "spike", &["idle_rss_mib", "spike_rss_mib", "settled_rss_mib", "settled_over_idle"]);
    }
}

#[test]
fn memory_scenario_reports_every_figure() {
    for engine in engines() {
        let mut args = vec![
            "memory",
            "--records",
            "300",
            "--remembered",
            "100",
            "--dim",
            "32",
            "--queries",
            "20",
            "--rounds",
            "2",
        ];
        args.extend(engine.iter().map(String::as_str));
        let report = bench(&args);
        let mut figures = vec![
            "insert_records_per_second".to_owned(),
            "bulk_load_records_per_second".to_owned(),
            "index_build_ms".to_owned(),
            "recall_at_10".to_owned(),
            "rss_mib".to_owned(),
        ];
        for name in ["index_cold_start_ms", "vector_search_p50_ms", "vector_search_p99_ms"]
            .into_iter()
            .chain(["hybrid_search_p50_ms", "hybrid_search_p99_ms"])
        {
            figures.extend(["min", "median", "max"].map(|of| format!("{name}_{of}")));
        }
        let figures: Vec<&str> = figures.iter().map(String::as_str).collect();
        assert_figures(&report, "memory", &figures);
        let recall = report["figures"].as_array().unwrap().iter().find(|f| f["name"] == "recall_at_10").unwrap();
        assert!(recall["value"].as_f64().unwrap() >= 0.95, "{report}");
        for name in ["load_average_before", "load_average_after"] {
            assert!(report["figures"].as_array().unwrap().iter().any(|f| f["name"] == name), "no {name}: {report}");
        }
    }
}

#[test]
fn fanout_scenario_reports_every_figure() {
    for engine in engines() {
        let mut args = vec!["fanout", "--agents", "30", "--concurrency", "4"];
        args.extend(engine.iter().map(String::as_str));
        let report = bench(&args);
        assert_figures(&report, "fanout", &["drain_ms", "drain_jobs_per_second", "rss_before_mib", "peak_rss_mib"]);
    }
}

#[test]
fn sse_scenario_reports_every_figure() {
    for engine in engines() {
        let mut args = vec!["sse", "--subscribers", "5", "--events", "4", "--rate", "200"];
        args.extend(engine.iter().map(String::as_str));
        let report = bench(&args);
        assert_figures(
            &report,
            "sse",
            &[
                "delivery_p50_ms",
                "delivery_p99_ms",
                "delivery_max_ms",
                "rss_before_mib",
                "rss_connected_mib",
                "peak_rss_mib",
            ],
        );
    }
}

#[test]
fn soak_scenario_reports_every_window_and_a_verdict() {
    for engine in engines() {
        // Three windows of two seconds: one of warm-up, two judged.
        let mut args = vec![
            "soak",
            "--seconds",
            "6",
            "--window-seconds",
            "2",
            "--chats-per-second",
            "4",
            "--jobs-per-second",
            "4",
            "--readers",
            "2",
            "--agents",
            "2",
        ];
        args.extend(engine.iter().map(String::as_str));
        let report = bench(&args);
        assert_figures(
            &report,
            "soak",
            &["windows", "chat_turns", "jobs_completed", "sse_events", "rss_after_warmup_mib", "rss_end_mib"],
        );
        let figure = |name: &str| {
            report["figures"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap()["value"].clone()
        };
        assert_eq!(figure("errors"), 0.0, "{report}");
        assert_eq!(figure("jobs_failed"), 0.0, "{report}");
        assert_eq!(figure("warmup_windows"), 1.0, "{report}");
        for verdict in ["rss_growth_percent", "chat_p99_drift_percent", "rss_pass", "p99_pass"] {
            assert!(figure(verdict).is_number(), "no {verdict} in {report}");
        }
        let series = report["series"].as_array().unwrap();
        assert_eq!(series.len(), 3, "{report}");
        assert!(series.iter().all(|w| w["rss_kib"].as_u64().unwrap() > 0), "{report}");
    }
}

#[test]
fn queue_scenario_with_worker_processes_reports_the_scale_out() {
    if cortex_testkit::skip_postgres() {
        return;
    }
    let url = cortex_testkit::pg_admin_url();
    let args = ["queue", "--workers", "2", "--jobs", "20", "--engine", "postgres", "--database-url", url.as_str()];
    let report = bench(&args);
    assert_figures(&report, "queue", &["workers_1_jobs_per_second", "workers_2_jobs_per_second", "scale_out_2_over_1"]);
    // Worker processes share a PostgreSQL database; SQLite is refused with a configuration error.
    let dir = tempfile::tempdir().unwrap();
    let output = cortex(dir.path()).args(["bench", "queue", "--workers", "2"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
}

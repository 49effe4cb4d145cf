//! Configuration: layer precedence, secrets, and every kind of error with its exit code.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use steward::config::{ConfigError, Loaded, Origin, Sources};

fn load(sources: &Sources) -> Result<Loaded, ConfigError> {
    steward_reference::service().load_config(sources)
}

fn sources(env_name: Option<&str>, file: Option<PathBuf>, vars: &[(&str, &str)]) -> Sources {
    Sources {
        config_dir: common::config_dir(),
        env_name: env_name.map(str::to_owned),
        config_file: file,
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        profile: None,
    }
}

fn load_err(sources: &Sources) -> ConfigError {
    load(sources).expect_err("the configuration must be rejected")
}

/// A file in a fresh temporary folder.
fn temp_file(name: &str, content: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("steward-config-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn loaded(sources: &Sources) -> Loaded {
    load(sources).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn later_layers_win_and_origins_are_tracked() {
    let defaults = loaded(&sources(None, None, &[]));
    assert_eq!(defaults.settings.server.port, 8080);

    let test_env = loaded(&sources(Some("test"), None, &[]));
    assert_eq!(test_env.settings.server.port, 0, "config/test.toml");
    assert_eq!(
        test_env.origin("server.port"),
        Some(&Origin::File(common::config_dir().join("test.toml")))
    );
    assert_eq!(
        test_env.settings.server.backlog, 1024,
        "untouched keys keep their default"
    );

    let file = temp_file("extra.toml", "[server]\nport = 9001\nworkers = 3\n");
    let with_file = loaded(&sources(Some("test"), Some(file.clone()), &[]));
    assert_eq!(with_file.settings.server.port, 9001);
    assert_eq!(
        with_file.origin("server.port"),
        Some(&Origin::File(file.clone()))
    );

    let with_env = loaded(&sources(
        Some("test"),
        Some(file),
        &[
            ("STEWARD__SERVER__PORT", "9002"),
            ("STEWARD__SHUTDOWN__DRAIN_DELAY", "250ms"),
        ],
    ));
    assert_eq!(with_env.settings.server.port, 9002);
    assert_eq!(
        with_env.settings.server.workers, 3,
        "the file still applies below the variable"
    );
    assert_eq!(with_env.settings.shutdown.drain_delay.as_millis(), 250);
    assert_eq!(
        with_env.origin("server.port"),
        Some(&Origin::Env("STEWARD__SERVER__PORT".into()))
    );
}

#[test]
fn a_profile_lies_under_the_environment_file_and_knows_only_known_keys() {
    let profile = "[server]\nport = 7001\nbacklog = 77\n";
    let with_profile = |env_name| Sources {
        profile: Some(("a profile", profile)),
        ..sources(env_name, None, &[])
    };
    let under_defaults = loaded(&with_profile(None));
    assert_eq!(under_defaults.settings.server.port, 7001);
    assert_eq!(
        under_defaults.origin("server.port"),
        Some(&Origin::Builtin("a profile"))
    );
    let under_test = loaded(&with_profile(Some("test")));
    assert_eq!(
        under_test.settings.server.port, 0,
        "config/test.toml wins over the profile"
    );
    assert_eq!(
        under_test.settings.server.backlog, 77,
        "the profile wins over the defaults"
    );

    let typo = Sources {
        profile: Some(("a profile", "[server]\nprot = 1\n")),
        ..sources(None, None, &[])
    };
    let error = load_err(&typo);
    assert_eq!(
        (error.key.as_str(), error.origin),
        ("server.prot", Origin::Builtin("a profile"))
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_source() {
    let file = temp_file("typo.toml", "[server]\nprot = 9000\n");
    let error = load_err(&sources(None, Some(file.clone()), &[]));
    assert_eq!(error.key, "server.prot");
    assert_eq!(error.origin, Origin::File(file));

    let error = load_err(&sources(None, None, &[("STEWARD__SERVER__PROT", "9000")]));
    assert_eq!(error.key, "server.prot");
    assert_eq!(error.origin, Origin::Env("STEWARD__SERVER__PROT".into()));
    assert!(error.to_string().contains("known key"), "{error}");
}

#[test]
fn wrong_types_name_key_value_and_origin() {
    let error = load_err(&sources(None, None, &[("STEWARD__SERVER__PORT", "eighty")]));
    assert_eq!(error.key, "server.port");
    assert_eq!(error.value.as_deref(), Some("\"eighty\""));
    assert_eq!(error.origin, Origin::Env("STEWARD__SERVER__PORT".into()));

    let error = load_err(&sources(
        None,
        None,
        &[("STEWARD__SHUTDOWN__HTTP_TIMEOUT", "10")],
    ));
    assert_eq!(error.key, "shutdown.http_timeout");
    assert!(error.expected.contains("duration"), "{error}");

    let file = temp_file("bad.toml", "[log]\nformat = \"xml\"\n");
    let error = load_err(&sources(None, Some(file), &[]));
    assert_eq!(error.key, "log.format");
    assert!(error.to_string().contains("xml"), "{error}");
}

#[test]
fn out_of_range_values_are_rejected() {
    let cases = [
        ("STEWARD__SERVER__PORT", "70000", "server.port"),
        ("STEWARD__SERVER__WORKERS", "100000", "server.workers"),
        ("STEWARD__REDIS__POOL__MAX_SIZE", "0", "redis.pool.max_size"),
        (
            "STEWARD__POSTGRES__POOL__MIN_IDLE",
            "99",
            "postgres.pool.min_idle",
        ),
        ("STEWARD__HEALTH__TIMEOUT", "0ms", "health.timeout"),
        (
            "STEWARD__SUPERVISOR__BACKOFF__MIN",
            "1h",
            "supervisor.backoff.max",
        ),
        ("STEWARD__LOG__LEVEL", "chatty", "log.level"),
        ("STEWARD__REDIS__URL", "http://nope", "redis.url"),
    ];
    for (var, value, key) in cases {
        let error = load_err(&sources(None, None, &[(var, value)]));
        assert_eq!(error.key, key, "{var}={value}: {error}");
    }
}

#[test]
fn opentelemetry_variables_set_tracing_and_steward_variables_win_over_them() {
    let from_otel = loaded(&sources(
        None,
        None,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SERVICE_NAME", "ledger"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("STEWARD__TRACING__BATCH_SIZE", "50"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "60"),
        ],
    ));
    let tracing = &from_otel.settings.tracing;
    assert_eq!(tracing.endpoint, "http://collector:4318");
    assert_eq!(tracing.service_name, "ledger");
    assert_eq!(tracing.export_timeout, Duration::from_millis(1500));
    assert_eq!(tracing.queue_size, 100);
    assert_eq!(tracing.sample_ratio, 0.25);
    assert_eq!(tracing.batch_size, 50, "STEWARD__ wins over OTEL_");
    assert_eq!(
        from_otel.origin("tracing.endpoint"),
        Some(&Origin::Env("OTEL_EXPORTER_OTLP_ENDPOINT".into()))
    );

    let on = temp_file("tracing.toml", "[tracing]\nenabled = true\n");
    let disabled = [("OTEL_SDK_DISABLED", "true")];
    let off = loaded(&sources(None, Some(on.clone()), &disabled));
    assert!(
        !off.settings.tracing.enabled,
        "OTEL_SDK_DISABLED over the file"
    );
    let explicit = [disabled[0], ("STEWARD__TRACING__ENABLED", "true")];
    let still_on = loaded(&sources(None, Some(on), &explicit));
    assert!(still_on.settings.tracing.enabled, "STEWARD__ over OTEL_");
    // A sampler steward does not have leaves the ratio alone.
    let other = loaded_with(&[
        ("OTEL_TRACES_SAMPLER", "always_off"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
    ]);
    assert_eq!(other.settings.tracing.sample_ratio, 1.0);

    for (var, value, key) in [
        (
            "STEWARD__TRACING__SAMPLE_RATIO",
            "1.5",
            "tracing.sample_ratio",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "collector:4318",
            "tracing.endpoint",
        ),
        ("STEWARD__TRACING__HEADERS", "no-value", "tracing.headers"),
        ("STEWARD__TRACING__BATCH_SIZE", "5000", "tracing.batch_size"),
        (
            "STEWARD__TRACING__EXPORT_TIMEOUT",
            "0s",
            "tracing.export_timeout",
        ),
    ] {
        let error = load_err(&sources(None, None, &[(var, value)]));
        assert_eq!(error.key, key, "{var}={value}: {error}");
    }
}

fn loaded_with(vars: &[(&str, &str)]) -> Loaded {
    loaded(&sources(None, None, vars))
}

#[test]
fn shutdown_deadlines_must_be_consistent() {
    // Phases: 3s + 8s + 8s + 2s = 21s; the total must exceed that...
    let error = load_err(&sources(
        None,
        None,
        &[
            ("STEWARD__SHUTDOWN__DRAIN_DELAY", "3s"),
            ("STEWARD__SHUTDOWN__TIMEOUT", "20s"),
        ],
    ));
    assert_eq!(error.key, "shutdown.timeout");
    assert!(
        error.expected.contains("drain_delay + http_timeout"),
        "{error}"
    );

    // ...and stay below the orchestrator's grace period.
    let error = load_err(&sources(
        None,
        None,
        &[("STEWARD__SHUTDOWN__ORCHESTRATOR_GRACE", "22s")],
    ));
    assert_eq!(error.key, "shutdown.timeout");
    assert!(error.expected.contains("orchestrator_grace"), "{error}");
    assert!(
        error
            .expected
            .contains("STEWARD__SHUTDOWN__ORCHESTRATOR_GRACE"),
        "{error}"
    );
}

#[test]
fn secrets_come_from_files_and_never_print() {
    let token = temp_file("token", "s3cr3t-admin-token\n");
    let path = token.to_str().unwrap();
    let loaded = loaded(&sources(
        None,
        None,
        &[
            ("STEWARD__ADMIN__TOKEN_FILE", path),
            (
                "STEWARD__POSTGRES__URL",
                "postgres://app:hunter2@db:5432/steward",
            ),
        ],
    ));
    assert_eq!(loaded.settings.admin.token, "s3cr3t-admin-token");
    let printed = loaded.redacted_toml();
    assert!(!printed.contains("s3cr3t-admin-token"), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(
        printed.contains("postgres://app:***@db:5432/steward"),
        "{printed}"
    );

    let error = load_err(&sources(
        None,
        None,
        &[
            ("STEWARD__ADMIN__TOKEN_FILE", path),
            ("STEWARD__ADMIN__TOKEN", "inline"),
        ],
    ));
    assert_eq!(error.key, "admin.token_file");

    let error = load_err(&sources(
        None,
        None,
        &[("STEWARD__ADMIN__TOKEN_FILE", "/no/such/file")],
    ));
    assert_eq!(error.key, "admin.token_file");
    assert!(error.expected.contains("readable"), "{error}");
}

#[test]
fn authentication_is_on_in_production_and_needs_what_its_schemes_need() {
    const KEY: &str = "a-production-hash-key-of-32-bytes-or-more";
    let key = ("STEWARD__AUTH__API_KEYS__HASH_KEY", KEY);
    // Development is open (config/development.toml); production is not, and needs a hash key.
    assert!(!loaded(&sources(None, None, &[])).settings.auth.required);
    let error = load_err(&sources(Some("production"), None, &[]));
    assert_eq!(error.key, "auth.api_keys.hash_key", "{error}");
    let production = loaded(&sources(Some("production"), None, &[key]));
    assert!(production.settings.auth.required);
    assert!(
        !production.redacted_toml().contains(KEY),
        "the hash key is a secret"
    );

    // Open in production only when a second key says so.
    let open = ("STEWARD__AUTH__REQUIRED", "false");
    let error = load_err(&sources(Some("production"), None, &[key, open]));
    assert_eq!(error.key, "auth.required");
    assert!(error.expected.contains("open_in_production"), "{error}");
    let on_purpose = ("STEWARD__AUTH__OPEN_IN_PRODUCTION", "true");
    assert!(
        !loaded(&sources(Some("production"), None, &[key, open, on_purpose]))
            .settings
            .auth
            .required
    );

    let short = ("STEWARD__AUTH__API_KEYS__HASH_KEY", "short");
    assert_eq!(
        load_err(&sources(Some("production"), None, &[short])).key,
        "auth.api_keys.hash_key"
    );
    let jwt = [
        key,
        ("STEWARD__AUTH__JWT__ENABLED", "true"),
        ("STEWARD__AUTH__JWT__AUDIENCE", "ledger"),
    ];
    assert_eq!(load_err(&sources(None, None, &jwt)).key, "auth.jwt.issuer");
    let mut two_keys = jwt.to_vec();
    two_keys.extend([
        ("STEWARD__AUTH__JWT__ISSUER", "https://id.test"),
        ("STEWARD__AUTH__JWT__KEY_FILE", "/a.pem"),
        ("STEWARD__AUTH__JWT__JWKS_FILE", "/b.json"),
    ]);
    let error = load_err(&sources(None, None, &two_keys));
    assert!(error.expected.contains("exactly one"), "{error}");
    let no_scheme = [
        ("STEWARD__AUTH__REQUIRED", "true"),
        ("STEWARD__AUTH__API_KEYS__ENABLED", "false"),
    ];
    assert_eq!(
        load_err(&sources(None, None, &no_scheme)).key,
        "auth.required"
    );
}

#[test]
fn a_missing_overlay_for_an_explicit_environment_is_an_error() {
    let error = load_err(&sources(Some("staging"), None, &[]));
    assert!(error.to_string().contains("staging.toml"), "{error}");
}

fn steward(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_steward"));
    command
        .args(args)
        .current_dir(common::manifest_dir())
        .env_remove("STEWARD_ENV")
        .env_remove("RUST_LOG");
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("STEWARD__")) {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied());
    command.output().expect("run steward")
}

#[test]
fn check_config_prints_the_redacted_configuration() {
    let output = steward(
        &["check-config"],
        &[
            ("STEWARD__ADMIN__TOKEN", "very-secret-admin-token"),
            ("STEWARD__SERVER__PORT", "9100"),
        ],
    );
    assert_eq!(output.status.code(), Some(0));
    let printed = String::from_utf8(output.stdout).unwrap();
    let parsed: toml::Table = printed.parse().expect("check-config prints TOML");
    assert_eq!(parsed["server"]["port"].as_integer(), Some(9100));
    assert_eq!(parsed["admin"]["token"].as_str(), Some("<redacted>"));
    assert!(!printed.contains("very-secret"));
}

#[test]
fn the_binary_exits_2_with_one_message_for_a_bad_configuration() {
    for args in [&["check-config"][..], &["serve"][..], &[][..]] {
        let output = steward(args, &[("STEWARD__SERVER__PORT", "70000")]);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "one message: {stderr}");
        assert!(stderr.contains("server.port = 70000"), "{stderr}");
        assert!(stderr.contains("STEWARD__SERVER__PORT"), "{stderr}");
        assert!(stderr.contains("an integer from 0 to 65535"), "{stderr}");
    }
}

#[test]
fn help_and_version_work() {
    let help = steward(&["--help"], &[]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8(help.stdout).unwrap();
    for word in ["serve", "check-config", "healthcheck", "--config"] {
        assert!(text.contains(word), "{text}");
    }
    let version = steward(&["--version"], &[]);
    assert_eq!(version.status.code(), Some(0));
    assert!(String::from_utf8(version.stdout)
        .unwrap()
        .contains(env!("CARGO_PKG_VERSION")));
}

//! charts/authgate, linted and rendered by Helm's own engine (helm-python-sdk: Helm v4 as a
//! library, no cluster) through `tests/peers/chart/render.py`, every rendered manifest
//! validated against the Kubernetes API schemas of the oldest version the chart supports
//! and the newest kubernetes-validate knows (strict: unknown fields are errors), and the
//! rendered configuration checked by the real binary's `authgate check-config`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::deploy::{repo, run_script};
use common::*;
use serde_json::{Value, json};

/// What render.py reported for one set of values.
struct Rendered {
    lint_messages: Vec<String>,
    lint_errors: Vec<String>,
    error: Option<String>,
    manifests: Vec<Value>,
    notes: String,
}

fn render(values: Value) -> Rendered {
    let chart = repo().join("charts/authgate");
    let case = json!({ "values": values }).to_string();
    let out = run_script("render.py", &[chart.to_str().unwrap(), &case]);
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    Rendered {
        lint_messages: strings(&out["lint_messages"]),
        lint_errors: strings(&out["lint_errors"]),
        error: out["error"].as_str().map(str::to_owned),
        manifests: out["manifests"].as_array().unwrap().clone(),
        notes: out["notes"].as_str().unwrap().to_owned(),
    }
}

impl Rendered {
    /// Renders that must succeed: no lint finding above "info", every manifest valid.
    fn ok(values: Value) -> Self {
        let r = render(values);
        assert_eq!(r.error, None, "the chart did not render");
        assert_eq!(
            r.lint_messages,
            ["1 Chart.yaml: icon is recommended"],
            "helm lint --strict"
        );
        for m in &r.manifests {
            let expected = if m["kind"] == "ServiceMonitor" {
                // A Prometheus Operator CRD: no schema in kubernetes-validate; its fields
                // are asserted by the tests that enable it.
                "no schema"
            } else {
                "ok"
            };
            for (version, result) in m["validation"].as_object().unwrap() {
                assert_eq!(
                    result, expected,
                    "{} {} against Kubernetes {version}",
                    m["kind"], m["template"]
                );
            }
        }
        r
    }

    /// Renders that must fail: Helm's message, and nothing rendered.
    fn refused(values: Value) -> String {
        let r = render(values);
        assert!(r.manifests.is_empty(), "rendered although refused");
        r.error.expect("the chart rendered values it must refuse")
    }

    fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self
            .manifests
            .iter()
            .map(|m| m["kind"].as_str().unwrap())
            .collect();
        kinds.sort();
        kinds
    }

    fn object(&self, kind: &str) -> &Value {
        let found: Vec<&Value> = self
            .manifests
            .iter()
            .filter(|m| m["kind"] == kind)
            .map(|m| &m["object"])
            .collect();
        assert_eq!(found.len(), 1, "one {kind}");
        found[0]
    }

    /// The configuration file the pod reads.
    fn config(&self) -> &str {
        self.object("ConfigMap")["data"]["config.yaml"]
            .as_str()
            .unwrap()
    }

    fn container(&self) -> &Value {
        let containers = self.object("Deployment")["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1);
        &containers[0]
    }
}

/// `authgate check-config` on `config`: (exit code, stdout, stderr).
fn check_config(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("AUTHGATE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The values of the Redis case: three replicas, an autoscaler, metrics and the Ingress.
fn redis_values() -> Value {
    json!({
        "replicaCount": 3,
        "config": {
            "store": { "type": "redis", "url": "redis://redis-master.redis.svc.cluster.local:6379/0" },
            "mint": { "issuer": "https://auth.example.org", "audience": "api" },
            "providers": [{ "type": "api_token" }, { "type": "basic" }],
            "cache": { "max_entries": 1_000_000 },
        },
        "secrets": { "redisPassword": { "secretName": "redis-auth", "key": "password" } },
        "autoscaling": { "enabled": true, "minReplicas": 3, "maxReplicas": 6 },
        "serviceMonitor": { "enabled": true },
        "ingress": { "enabled": true, "host": "auth.example.org" },
    })
}

#[test]
fn default_values_render_a_hardened_single_replica_on_a_volume() {
    let r = Rendered::ok(json!({}));
    assert_eq!(
        r.kinds(),
        [
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount"
        ]
    );

    let deployment = r.object("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    // Longer than drain_delay (5 s) + shutdown_timeout (10 s).
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);

    let c = r.container();
    assert_eq!(c["image"], "authgate:0.1.0");
    assert_eq!(c["args"], json!(["serve"]));
    assert_eq!(
        c["env"],
        json!([{ "name": "AUTHGATE_CONFIG", "value": "/etc/authgate/config.yaml" }])
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][resource].is_string(),
                "{kind}.{resource}"
            );
        }
    }
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({ "path": "/livez", "port": "admin" })
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({ "path": "/readyz", "port": "admin" })
    );
    assert_eq!(
        c["ports"],
        json!([
            { "name": "http", "containerPort": 8080, "protocol": "TCP" },
            { "name": "admin", "containerPort": 9090, "protocol": "TCP" }
        ])
    );
    // The store's volume is the claim; the configuration is read-only.
    assert_eq!(
        c["volumeMounts"],
        json!([
            { "name": "config", "mountPath": "/etc/authgate", "readOnly": true },
            { "name": "tmp", "mountPath": "/tmp" },
            { "name": "state", "mountPath": "/var/lib/authgate" }
        ])
    );
    assert_eq!(
        pod["volumes"][2],
        json!({ "name": "state", "persistentVolumeClaim": { "claimName": "authgate" } })
    );
    assert_eq!(
        r.object("PersistentVolumeClaim")["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );

    // The checksum is the rendered configuration's: a change rolls the pods.
    let config = r.config();
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"],
        sha256_hex(config.trim_end_matches('\n'))
    );

    // The configuration the pod reads passes the binary's own check, with the listeners
    // and the store path the chart owns.
    let (code, stdout, stderr) = check_config(config);
    assert_eq!(
        (code, stdout.as_str()),
        (0, "configuration is valid\n"),
        "{stderr}"
    );
    assert!(config.contains("listen: 0.0.0.0:8080\n"), "{config}");
    assert!(config.contains("listen: 0.0.0.0:9090\n"), "{config}");
    assert!(
        config.contains("path: /var/lib/authgate/authgate.db\n"),
        "{config}"
    );

    // Both ports on the Service; only the ingress controller reaches the data port.
    assert_eq!(
        r.object("Service")["spec"]["ports"],
        json!([
            { "name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP" },
            { "name": "admin", "port": 9090, "targetPort": "admin", "protocol": "TCP" }
        ])
    );
    let policy = &r.object("NetworkPolicy")["spec"];
    assert_eq!(policy["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        policy["ingress"][0],
        json!({
            "from": [{
                "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "ingress-nginx" } },
                "podSelector": { "matchLabels": { "app.kubernetes.io/name": "ingress-nginx" } }
            }],
            "ports": [{ "port": "http", "protocol": "TCP" }]
        })
    );
    assert_eq!(
        policy["ingress"][1]["ports"],
        json!([{ "port": "admin", "protocol": "TCP" }])
    );
    assert_eq!(r.object("PodDisruptionBudget")["spec"]["maxUnavailable"], 1);
}

/// No Secret is rendered, none holds a literal, and the configuration has no secret key.
#[test]
fn no_literal_secret_is_rendered_by_default() {
    for values in [json!({}), redis_values()] {
        let r = Rendered::ok(values);
        assert!(!r.kinds().contains(&"Secret"), "{:?}", r.kinds());
        let config = r.config();
        for key in ["password:", "client_secret:", "secret:"] {
            assert!(!config.contains(key), "{key} in {config}");
        }
        // Secrets reach the pod as files from existing Secrets only.
        let pod = &r.object("Deployment")["spec"]["template"]["spec"];
        for volume in pod["volumes"].as_array().unwrap() {
            if let Some(secret) = volume.get("secret") {
                assert_eq!(secret["secretName"], "redis-auth", "{volume}");
            }
        }
    }
}

#[test]
fn redis_store_with_three_replicas_and_an_autoscaler() {
    let r = Rendered::ok(redis_values());
    assert_eq!(
        r.kinds(),
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Ingress",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ]
    );
    let deployment = r.object("Deployment");
    // The autoscaler owns the replica count; rolling updates keep every replica serving.
    assert_eq!(deployment["spec"].get("replicas"), None);
    assert_eq!(
        deployment["spec"]["strategy"],
        json!({ "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } })
    );
    let hpa = &r.object("HorizontalPodAutoscaler")["spec"];
    assert_eq!(
        hpa["scaleTargetRef"],
        json!({ "apiVersion": "apps/v1", "kind": "Deployment", "name": "authgate" })
    );
    assert_eq!(
        (&hpa["minReplicas"], &hpa["maxReplicas"]),
        (&json!(3), &json!(6))
    );

    // The password comes from the existing Secret as a file named in the configuration.
    let c = r.container();
    assert_eq!(
        c["volumeMounts"],
        json!([
            { "name": "config", "mountPath": "/etc/authgate", "readOnly": true },
            { "name": "tmp", "mountPath": "/tmp" },
            { "name": "redis-password", "mountPath": "/run/secrets/authgate/redis", "readOnly": true }
        ])
    );
    let pod = &r.object("Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][2],
        json!({ "name": "redis-password", "secret": {
            "secretName": "redis-auth", "defaultMode": 256,
            "items": [{ "key": "password", "path": "password" }] } })
    );
    let config = r.config();
    assert!(
        config.contains("password_file: /run/secrets/authgate/redis/password\n"),
        "{config}"
    );
    assert!(config.contains("type: redis\n"), "{config}");
    // A large number stays an integer (not 1e+06, which authgate would refuse).
    assert!(config.contains("max_entries: 1000000\n"), "{config}");
    let (code, stdout, stderr) = check_config(config);
    assert_eq!(
        (code, stdout.as_str()),
        (0, "configuration is valid\n"),
        "{stderr}"
    );

    let monitor = &r.object("ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        monitor["spec"]["endpoints"],
        json!([{ "port": "admin", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s" }])
    );
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        json!({ "app.kubernetes.io/name": "authgate", "app.kubernetes.io/instance": "authgate" })
    );

    // authgate's own public paths only, never the decision endpoints.
    let rule = &r.object("Ingress")["spec"]["rules"][0];
    assert_eq!(rule["host"], "auth.example.org");
    let paths: Vec<(&str, &str)> = rule["http"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap(), p["pathType"].as_str().unwrap()))
        .collect();
    assert_eq!(
        paths,
        [
            ("/oauth2", "Prefix"),
            ("/.well-known/jwks.json", "Exact"),
            ("/.well-known/openid-configuration", "Exact"),
            ("/.well-known/oauth-authorization-server", "Exact")
        ]
    );

    // Without the autoscaler the three replicas are the Deployment's.
    let mut values = redis_values();
    values["autoscaling"]["enabled"] = json!(false);
    let r = Rendered::ok(values);
    assert_eq!(r.object("Deployment")["spec"]["replicas"], 3);
    assert!(!r.kinds().contains(&"HorizontalPodAutoscaler"));
}

#[test]
fn several_replicas_on_the_embedded_store_are_refused() {
    let error = Rendered::refused(json!({ "replicaCount": 3 }));
    assert!(
        error.ends_with(
            "authgate: replicaCount is 3 but config.store.type is embedded: the embedded \
             SQLite store belongs to one process. Set config.store.type: redis (with \
             store.url) to run several replicas, or replicaCount: 1."
        ),
        "{error}"
    );
    let error = Rendered::refused(json!({ "autoscaling": { "enabled": true } }));
    assert!(
        error.ends_with(
            "authgate: autoscaling.enabled needs config.store.type: redis: the embedded \
             SQLite store belongs to one process, and an autoscaler would start several."
        ),
        "{error}"
    );
}

#[test]
fn wrong_values_fail_on_the_schema() {
    let cases = [
        (
            json!({ "replicaCount": "three" }),
            "- at '/replicaCount': got string, want integer",
        ),
        (
            json!({ "ports": { "data": 8080, "admin": "9090" } }),
            "- at '/ports/admin': got string, want integer",
        ),
        (
            json!({ "replicCount": 2 }),
            "- at '': additional properties 'replicCount' not allowed",
        ),
        (
            json!({ "config": { "store": { "type": "redis" } } }),
            "- at '/config/store': missing property 'url'",
        ),
        (
            json!({ "config": { "store": { "type": "sqlite" } } }),
            "- at '/config/store/type': value must be one of 'embedded', 'redis'",
        ),
        (
            json!({ "config": { "server": { "shutdown_timeout": 10 } } }),
            "- at '/config/server/shutdown_timeout': got number, want string",
        ),
    ];
    for (values, message) in cases {
        let r = render(values.clone());
        assert!(r.manifests.is_empty(), "{values} rendered");
        let error = r.error.unwrap_or_default();
        assert!(
            error.starts_with(
                "values don't meet the specifications of the schema(s) in the following chart(s):\nauthgate:\n"
            ) && error.contains(message),
            "{values}: {error}"
        );
        // helm lint says the same.
        assert!(
            r.lint_errors.iter().any(|e| e.contains(message)),
            "{values}: {:?}",
            r.lint_errors
        );
    }
}

#[test]
fn literal_secrets_in_the_configuration_are_refused() {
    let keystone = json!({ "type": "keystone", "auth_url": "http://keystone:5000/v3",
                           "username": "authgate", "password": "s3cret" });
    let error = Rendered::refused(json!({ "config": {
        "mint": { "issuer": "https://auth.example.org" },
        "providers": [{ "type": "api_token" }, keystone] } }));
    assert!(
        error.ends_with(
            "authgate: config.providers[1].password is a literal secret, and config goes into \
             a ConfigMap. Put it in an existing Secret, mount it with secrets.mounts and use \
             password_file, or set allowLiteralSecrets: true."
        ),
        "{error}"
    );
    let introspect = json!({ "type": "introspect", "issuer": "https://idp.example.org",
                             "client_id": "gw", "client_secret": "s3cret" });
    let error = Rendered::refused(json!({ "config": {
        "mint": { "issuer": "https://auth.example.org" }, "providers": [introspect] } }));
    assert!(
        error.contains("config.providers[0].client_secret is a literal secret"),
        "{error}"
    );
    let mut values = redis_values();
    values["config"]["store"]["url"] = json!("redis://authgate:s3cret@redis:6379/0");
    let error = Rendered::refused(values.clone());
    assert!(
        error.ends_with(
            "authgate: config.store.url holds a password, and config goes into a ConfigMap. \
             Put the password in a Secret and name it in secrets.redisPassword \
             (store.password_file), or set allowLiteralSecrets: true."
        ),
        "{error}"
    );
    // The explicit opt-out renders it.
    values["allowLiteralSecrets"] = json!(true);
    let r = Rendered::ok(values);
    assert!(r.config().contains("redis://authgate:s3cret@redis:6379/0"));
}

#[test]
fn a_grace_period_shorter_than_the_drain_is_refused() {
    let error = Rendered::refused(json!({ "terminationGracePeriodSeconds": 15 }));
    assert!(
        error.ends_with(
            "authgate: terminationGracePeriodSeconds (15) must be longer than \
             server.drain_delay + server.shutdown_timeout (15s), or Kubernetes kills \
             authgate before in-flight requests finish."
        ),
        "{error}"
    );
    let server = json!({ "drain_delay": "1500ms", "shutdown_timeout": "1m" });
    let error = Rendered::refused(json!({
        "config": { "server": server, "mint": { "issuer": "https://auth.example.org" },
                    "providers": [{ "type": "api_token" }] } }));
    assert!(
        error.contains("terminationGracePeriodSeconds (30) must be longer than server.drain_delay + server.shutdown_timeout (62s)"),
        "{error}"
    );
    let r = Rendered::ok(json!({
        "terminationGracePeriodSeconds": 63,
        "config": { "server": server, "mint": { "issuer": "https://auth.example.org" },
                    "providers": [{ "type": "api_token" }] } }));
    assert_eq!(
        r.object("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        63
    );
}

/// A changed configuration changes the pods' checksum (a rollout); a change elsewhere
/// does not.
#[test]
fn a_configuration_change_rolls_the_pods() {
    let checksum = |values: Value| -> String {
        let r = Rendered::ok(values);
        r.object("Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let base = checksum(redis_values());
    let mut audience = redis_values();
    audience["config"]["mint"]["audience"] = json!("other-api");
    assert_ne!(checksum(audience), base);
    let mut port = redis_values();
    port["ports"] = json!({ "data": 8081, "admin": 9090 });
    assert_ne!(checksum(port), base, "the listener is in the configuration");
    let mut replicas = redis_values();
    replicas["autoscaling"]["maxReplicas"] = json!(9);
    assert_eq!(checksum(replicas), base);
}

#[test]
fn signing_keys_and_other_secrets_are_mounted_files() {
    let r = Rendered::ok(json!({
        "secrets": {
            "signingKeys": { "secretName": "authgate-keys", "keys": ["rs256-2026.pem", "rs256-2025.pem"] },
            "mounts": [{ "name": "idp", "secretName": "authgate-idp", "mountPath": "/run/secrets/idp" }],
        },
    }));
    let config = r.config();
    assert!(
        config.contains(
            "key_files:\n  - /run/secrets/authgate/keys/rs256-2026.pem\n  - /run/secrets/authgate/keys/rs256-2025.pem\n"
        ),
        "{config}"
    );
    let pod = &r.object("Deployment")["spec"]["template"]["spec"];
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    assert_eq!(
        volumes["signing-keys"]["secret"],
        json!({ "secretName": "authgate-keys", "defaultMode": 256, "items": [
            { "key": "rs256-2026.pem", "path": "rs256-2026.pem" },
            { "key": "rs256-2025.pem", "path": "rs256-2025.pem" }] })
    );
    assert_eq!(
        volumes["secret-idp"]["secret"],
        json!({ "secretName": "authgate-idp", "defaultMode": 256 })
    );
    let mounts = &r.container()["volumeMounts"];
    assert!(
        mounts.as_array().unwrap().contains(
            &json!({ "name": "signing-keys", "mountPath": "/run/secrets/authgate/keys", "readOnly": true })
        ),
        "{mounts}"
    );
    assert!(
        mounts.as_array().unwrap().contains(
            &json!({ "name": "secret-idp", "mountPath": "/run/secrets/idp", "readOnly": true })
        ),
        "{mounts}"
    );
}

/// NOTES.txt prints the annotations of deploy/ingress-nginx/ingress.yaml, with this
/// release's Service address.
#[test]
fn notes_print_the_ingress_annotations() {
    let r = Rendered::ok(json!({}));
    assert!(
        r.notes.contains(
            "nginx.ingress.kubernetes.io/auth-url: \"http://authgate.auth.svc.cluster.local:8080/ingress-auth\""
        ),
        "{}",
        r.notes
    );
    let example =
        std::fs::read_to_string(repo().join("deploy/ingress-nginx/ingress.yaml")).unwrap();
    let list = |text: &str| -> String {
        let start = text
            .find("nginx.ingress.kubernetes.io/auth-response-headers: >-\n")
            .expect("auth-response-headers");
        text[start..]
            .lines()
            .skip(1)
            .take_while(|l| {
                l.trim_start()
                    .starts_with(|c: char| c.is_ascii_alphabetic())
            })
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(list(&r.notes), list(&example));
    assert!(list(&example).starts_with("Authorization, X-Auth-Request-User,"));
}

/// The rendered configuration serves: the real binary started on it (listeners moved to
/// free loopback ports, the store to a temporary directory) answers the Deployment's
/// probes on the admin listener, and the decision endpoint on the data one.
#[tokio::test(flavor = "multi_thread")]
async fn the_rendered_configuration_serves_the_probes() {
    let r = Rendered::ok(json!({}));
    let c = r.container();
    let dir = tempfile::tempdir().unwrap();
    let config = r
        .config()
        .replace("listen: 0.0.0.0:8080", "listen: 127.0.0.1:0")
        .replace("listen: 0.0.0.0:9090", "listen: 127.0.0.1:0")
        .replace(
            "path: /var/lib/authgate/authgate.db",
            &format!("path: {}", dir.path().join("authgate.db").display()),
        );
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let authgate = Authgate::start(&path);
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["port"], "admin");
        let url = authgate.admin_url(get["path"].as_str().unwrap());
        let ready = eventually(std::time::Duration::from_secs(10), async || {
            reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(ready, "{probe}: {url}");
        // Not on the data listener.
        let data = reqwest::get(authgate.url(get["path"].as_str().unwrap()))
            .await
            .unwrap();
        assert_ne!(data.status(), 200, "{probe} on the data port");
    }
    // The default policy: /healthz is anonymous, anything else needs a credential.
    let ask = |uri: &'static str| {
        reqwest::Client::new()
            .get(authgate.url("/auth"))
            .header("X-Original-URI", uri)
            .header("X-Original-Method", "GET")
            .header("Host", "api.example.org")
            .send()
    };
    assert_eq!(ask("/healthz").await.unwrap().status(), 200);
    assert_eq!(ask("/data").await.unwrap().status(), 401);
}

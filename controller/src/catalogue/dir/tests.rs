#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::swarm::spec::EndpointMode;

use super::*;

fn examples() -> DirCatalogue {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/catalogue");
    DirCatalogue::open(dir).unwrap()
}

fn request<'a>(
    recipe: &'a str,
    version: &'a str,
    env: &'a BTreeMap<String, String>,
) -> RenderRequest<'a> {
    RenderRequest {
        recipe,
        version,
        stack: "hw-webapp",
        domain: "hw-webapp.localhost",
        env,
    }
}

/// A catalogue with one recipe `app` whose recipe.yml is `recipe` and compose file `compose`.
fn temp_catalogue(recipe: &str, compose: &str) -> (tempfile::TempDir, DirCatalogue) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/recipe.yml"), recipe).unwrap();
    std::fs::write(dir.path().join("app/compose.yml"), compose).unwrap();
    let catalogue = DirCatalogue::open(dir.path()).unwrap();
    (dir, catalogue)
}

const COMPOSE: &str = "version: \"3.8\"\nservices:\n  app:\n    image: img:${VERSION}\n    command: [\"/bin/serve\"]\n";

#[test]
fn the_example_catalogue_should_load_with_ordered_versions() {
    let c = examples();
    assert_eq!(c.recipes().unwrap(), vec!["sso", "webapp"]);
    let versions: Vec<String> = c
        .versions("webapp")
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(versions, vec!["1.0.0", "1.1.0", "2.0.0", "2.1.0-broken"]);
    assert_eq!(c.newest("webapp", false).unwrap().as_str(), "2.0.0");
    assert_eq!(c.newest("webapp", true).unwrap().as_str(), "2.1.0-broken");
    assert_eq!(c.newest("sso", false).unwrap().as_str(), "1.1.0");
}

#[test]
fn every_version_of_the_example_catalogue_should_render() {
    let problems = examples().check_all();
    assert!(
        problems.is_empty(),
        "{:#?}",
        problems.iter().map(|e| e.to_string()).collect::<Vec<_>>()
    );
}

#[test]
fn rendering_should_fill_builtins_defaults_and_overrides() {
    let env = BTreeMap::from([("REPLICAS".to_string(), "2".to_string())]);
    let rendered = examples()
        .render(&request("webapp", "1.1.0", &env))
        .unwrap();
    assert_eq!(rendered.stack.namespace, "hw-webapp");
    assert_eq!(rendered.variables["VERSION"], "1.1.0");
    assert_eq!(rendered.variables["PORT"], "8080");
    assert_eq!(rendered.variables["REPLICAS"], "2");
    let service = &rendered.stack.services[0];
    assert_eq!(service.name.as_deref(), Some("hw-webapp_app"));
    let container = service
        .task_template
        .as_ref()
        .unwrap()
        .container_spec
        .as_ref()
        .unwrap();
    assert_eq!(
        container.image.as_deref(),
        Some("hearth-fixture/webapp:1.1.0")
    );
    assert!(container.health_check.is_some());
    let env = container.env.clone().unwrap();
    assert!(env.contains(&"PORT=8080".to_string()), "{env:?}");
    assert!(env.contains(&"APP_DOMAIN=hw-webapp.localhost".to_string()));
    assert_eq!(
        service.endpoint_spec.as_ref().unwrap().mode,
        Some(EndpointMode::Dnsrr)
    );
    let replicas = service
        .mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas);
    assert_eq!(replicas, Some(2));
}

#[test]
fn an_unpublished_version_should_be_refused_with_the_published_list() {
    let env = BTreeMap::new();
    let err = examples()
        .render(&request("webapp", "3.0.0", &env))
        .unwrap_err();
    assert!(matches!(err, Error::VersionNotPublished { .. }));
    assert_eq!(
        err.to_string(),
        "recipe \"webapp\" does not publish version \"3.0.0\" (published: 1.0.0, 1.1.0, 2.0.0, 2.1.0-broken)"
    );
}

#[test]
fn an_undeclared_override_should_be_refused() {
    let env = BTreeMap::from([("PROT".to_string(), "1".to_string())]);
    let err = examples()
        .render(&request("webapp", "1.0.0", &env))
        .unwrap_err();
    assert!(
        matches!(&err, Error::VariableUndeclared { name, .. } if name == "PROT"),
        "{err}"
    );
}

#[test]
fn a_required_variable_without_a_value_should_be_refused() {
    let (_d, c) = temp_catalogue(
        "composeFiles: [compose.yml]\nversions: [1.0.0]\nvariables:\n  TOKEN: { required: true }\n",
        COMPOSE,
    );
    let env = BTreeMap::new();
    let err = c.render(&request("app", "1.0.0", &env)).unwrap_err();
    assert!(matches!(&err, Error::VariableMissing { name, .. } if name == "TOKEN"));
    let env = BTreeMap::from([("TOKEN".to_string(), "t".to_string())]);
    c.render(&request("app", "1.0.0", &env)).unwrap();
}

#[test]
fn an_unknown_recipe_should_name_the_known_ones() {
    let err = examples().recipe("nope").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "recipe \"nope\" not found in {} (known: sso, webapp)",
            examples().dir().display()
        )
    );
    assert!(matches!(
        examples().recipe("../webapp").unwrap_err(),
        Error::RecipeNotFound { .. }
    ));
}

#[test]
fn a_malformed_recipe_file_should_be_rejected_with_its_location() {
    let (d, c) = temp_catalogue(
        "composeFiles: [compose.yml]\nversions: [1.0.0]\nvarables: {}\n",
        COMPOSE,
    );
    let err = c.recipe("app").unwrap_err();
    let path = d.path().join("app/recipe.yml");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}:3:1: ", path.display())),
        "{msg}"
    );
    assert!(msg.contains("varables"), "{msg}");
}

#[test]
fn every_rule_broken_by_a_recipe_file_should_be_reported() {
    let (d, c) = temp_catalogue(
        "composeFiles: [compose.yml, ../x.yml, missing.yml]\nversions: [1.0.0, 1.0, 1.0.0]\nvariables:\n  VERSION: {}\n  A: { required: true, default: x }\n",
        COMPOSE,
    );
    let Error::RecipeRejected { problems, .. } = c.recipe("app").unwrap_err() else {
        panic!("expected RecipeRejected");
    };
    let p = d.path().join("app/recipe.yml").display().to_string();
    let fields: Vec<&str> = problems
        .iter()
        .map(|m| m.strip_prefix(&format!("{p}: ")).unwrap())
        .map(|m| m.split(':').next().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec![
            "composeFiles[1]",
            "composeFiles[2]",
            "versions[1]",
            "versions[2]",
            "variables.A",
            "variables.VERSION"
        ],
        "{problems:#?}"
    );
}

#[test]
fn a_compose_error_should_keep_its_file_and_line() {
    let (d, c) = temp_catalogue(
        "composeFiles: [compose.yml]\nversions: [1.0.0]\n",
        "version: \"3.8\"\nservices:\n  app:\n    image: img\n    bogus: 1\n",
    );
    let env = BTreeMap::new();
    let err = c.render(&request("app", "1.0.0", &env)).unwrap_err();
    let msg = err.to_string();
    let file = d.path().join("app/compose.yml").display().to_string();
    assert!(msg.contains(&format!("{file}:5:5")), "{msg}");
}

/// The container spec of the first service in a render.
fn container(r: &Rendered) -> crate::swarm::spec::ContainerSpec {
    r.stack.services[0]
        .task_template
        .clone()
        .unwrap()
        .container_spec
        .unwrap()
}

/// The `env` of the first service in a render.
fn app_env(r: &Rendered) -> Vec<String> {
    container(r).env.unwrap_or_default()
}

const RECIPE: &str = "composeFiles: [compose.yml]\nversions: [1.0.0, 1.1.0]\n";

#[test]
fn an_unchanged_recipe_should_be_rendered_once_and_then_answered_from_the_cache() {
    let (_d, c) = temp_catalogue(RECIPE, COMPOSE);
    let env = BTreeMap::new();
    let first = c.render(&request("app", "1.0.0", &env)).unwrap();
    for _ in 0..5 {
        assert_eq!(c.render(&request("app", "1.0.0", &env)).unwrap(), first);
    }
    assert_eq!(
        c.cache_stats(),
        CacheStats {
            hits: 5,
            renders: 1
        }
    );
    // A clone shares the cache (the daemon hands clones to each controller).
    let clone = c.clone();
    clone.render(&request("app", "1.0.0", &env)).unwrap();
    assert_eq!(
        c.cache_stats(),
        CacheStats {
            hits: 6,
            renders: 1
        }
    );
    // Another version, stack or override is another render.
    c.render(&request("app", "1.1.0", &env)).unwrap();
    let other_stack = RenderRequest {
        stack: "hr-run-1",
        ..request("app", "1.0.0", &env)
    };
    let r = c.render(&other_stack).unwrap();
    let name = r.stack.services[0].name.clone().unwrap();
    assert!(name.starts_with("hr-run-1_"), "{name}");
    assert_eq!(
        c.cache_stats(),
        CacheStats {
            hits: 6,
            renders: 3
        }
    );
    assert_eq!(c.cached_renders(), 3);
}

#[test]
fn an_edited_compose_file_should_be_rendered_again_even_with_the_same_size_and_mtime() {
    let (d, c) = temp_catalogue(RECIPE, COMPOSE);
    let env = BTreeMap::new();
    let path = d.path().join("app/compose.yml");
    let before = c.render(&request("app", "1.0.0", &env)).unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    // Same length, different image; the old mtime put back.
    let edited = COMPOSE.replace("img:", "imx:");
    assert_eq!(edited.len(), COMPOSE.len());
    std::fs::write(&path, &edited).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let after = c.render(&request("app", "1.0.0", &env)).unwrap();
    assert_ne!(before, after);
    assert_eq!(container(&after).image.as_deref(), Some("imx:1.0.0"));
    assert_eq!(
        c.cache_stats(),
        CacheStats {
            hits: 0,
            renders: 2
        }
    );
    // Unchanged since: answered from the cache again.
    assert_eq!(c.render(&request("app", "1.0.0", &env)).unwrap(), after);
    assert_eq!(
        c.cache_stats(),
        CacheStats {
            hits: 1,
            renders: 2
        }
    );
}

#[test]
fn an_edited_recipe_file_should_be_rendered_again_and_its_errors_reported() {
    let (d, c) = temp_catalogue(RECIPE, COMPOSE);
    let env = BTreeMap::new();
    c.render(&request("app", "1.0.0", &env)).unwrap();
    // 1.0.0 withdrawn: the cached render must not answer.
    std::fs::write(
        d.path().join("app/recipe.yml"),
        "composeFiles: [compose.yml]\nversions: [1.1.0]\n",
    )
    .unwrap();
    let err = c.render(&request("app", "1.0.0", &env)).unwrap_err();
    assert!(matches!(err, Error::VersionNotPublished { .. }), "{err}");
    // The recipe removed: not found, not a cached answer.
    std::fs::remove_file(d.path().join("app/recipe.yml")).unwrap();
    let err = c.render(&request("app", "1.1.0", &env)).unwrap_err();
    assert!(matches!(err, Error::RecipeNotFound { .. }), "{err}");
    assert_eq!(c.cache_stats().hits, 0);
}

#[test]
fn an_edited_side_file_should_be_rendered_again() {
    let compose = "version: \"3.8\"\nservices:\n  app:\n    image: img:${VERSION}\n    \
                   command: [\"/bin/serve\"]\n    env_file: [app.env]\n";
    let (d, c) = temp_catalogue(RECIPE, compose);
    std::fs::write(d.path().join("app/app.env"), "MODE=one\n").unwrap();
    let env = BTreeMap::new();
    let first = c.render(&request("app", "1.0.0", &env)).unwrap();
    assert!(app_env(&first).contains(&"MODE=one".to_string()));
    c.render(&request("app", "1.0.0", &env)).unwrap();
    assert_eq!(
        c.cache_stats(),
        CacheStats {
            hits: 1,
            renders: 1
        }
    );
    std::fs::write(d.path().join("app/app.env"), "MODE=two\n").unwrap();
    let second = c.render(&request("app", "1.0.0", &env)).unwrap();
    assert!(app_env(&second).contains(&"MODE=two".to_string()));
    assert_eq!(
        c.cache_stats(),
        CacheStats {
            hits: 1,
            renders: 2
        }
    );
    // A side file that disappears: the render fails as it would without a cache.
    std::fs::remove_file(d.path().join("app/app.env")).unwrap();
    assert!(c.render(&request("app", "1.0.0", &env)).is_err());
}

#[test]
fn the_cache_keeps_at_most_its_capacity_dropping_the_least_recently_used() {
    let (_d, c) = temp_catalogue(RECIPE, COMPOSE);
    let env = BTreeMap::new();
    let stacks: Vec<String> = (0..=cache::CAPACITY)
        .map(|i| format!("hr-run-{i}"))
        .collect();
    fn req<'a>(stack: &'a str, env: &'a BTreeMap<String, String>) -> RenderRequest<'a> {
        RenderRequest {
            stack,
            ..request("app", "1.0.0", env)
        }
    }
    c.render(&req(&stacks[0], &env)).unwrap();
    for s in &stacks[1..cache::CAPACITY] {
        c.render(&req(s, &env)).unwrap();
    }
    // stack 0 used again: stack 1 is now the least recently used.
    c.render(&req(&stacks[0], &env)).unwrap();
    c.render(&req(&stacks[cache::CAPACITY], &env)).unwrap();
    assert_eq!(c.cached_renders(), cache::CAPACITY);
    let before = c.cache_stats();
    c.render(&req(&stacks[0], &env)).unwrap();
    assert_eq!(c.cache_stats().hits, before.hits + 1, "stack 0 kept");
    c.render(&req(&stacks[1], &env)).unwrap();
    assert_eq!(
        c.cache_stats().renders,
        before.renders + 1,
        "stack 1 dropped"
    );
}

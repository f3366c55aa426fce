//! The pure planner: desired stack + observed objects of its namespace → ordered actions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crd::names::labels as keys;
use serde::Serialize;

use super::observe::Observed;
use super::{Error, ObjectRef, Owner, Result};
use crate::swarm::spec::{
    self, ConfigSpec, Map, MountType, NetworkSpec, SecretSpec, ServiceSpec, StackSpec, VolumeSpec,
};
use crate::swarm::{Labels, ObjectKind};

/// The label `docker stack` uses to group a stack's objects.
pub use crate::swarm::labels::NAMESPACE as NAMESPACE_LABEL;

/// Longest secret or config name Docker accepts.
const MAX_SECRET_NAME_LEN: usize = 64;
/// Hex digits of the content hash appended to secret and config names.
const NAME_HASH_LEN: usize = 10;

/// One write hearth makes to converge a stack. The fields are what the call needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create a network that is missing.
    CreateNetwork(NetworkSpec),
    /// Remove a network (only to recreate a changed one while the stack has no services).
    RemoveNetwork {
        /// Network ID.
        id: String,
        /// Network name.
        name: String,
    },
    /// Create a secret under its content-hash name.
    CreateSecret(SecretSpec),
    /// Replace a secret's labels (its owner changed; data is immutable and unchanged).
    UpdateSecret {
        /// Secret ID.
        id: String,
        /// Its current version index.
        version: u64,
        /// The spec (same name and data, new labels).
        spec: SecretSpec,
    },
    /// Create a config under its content-hash name.
    CreateConfig(ConfigSpec),
    /// Replace a config's labels (its owner changed).
    UpdateConfig {
        /// Config ID.
        id: String,
        /// Its current version index.
        version: u64,
        /// The spec (same name and data, new labels).
        spec: ConfigSpec,
    },
    /// Create a missing service.
    CreateService(Box<ServiceSpec>),
    /// Update a service whose spec hash or owner labels differ.
    UpdateService {
        /// Service ID.
        id: String,
        /// The version index observed.
        version: u64,
        /// The desired spec.
        spec: Box<ServiceSpec>,
    },
    /// Remove a service that is no longer in the desired stack (prune).
    RemoveService {
        /// Service ID.
        id: String,
        /// Service name.
        name: String,
    },
    /// Remove a secret superseded by a new content hash (after services were updated).
    RemoveSecret {
        /// Secret ID.
        id: String,
        /// Secret name.
        name: String,
    },
    /// Remove a config superseded by a new content hash (after services were updated).
    RemoveConfig {
        /// Config ID.
        id: String,
        /// Config name.
        name: String,
    },
}

impl Action {
    /// The object the action writes.
    pub fn object(&self) -> ObjectRef {
        match self {
            Action::CreateNetwork(s) => ObjectRef::new(ObjectKind::Network, &s.name, ""),
            Action::RemoveNetwork { id, name } => ObjectRef::new(ObjectKind::Network, name, id),
            Action::CreateSecret(s) => ObjectRef::new(ObjectKind::Secret, &s.name, ""),
            Action::UpdateSecret { id, spec, .. } => {
                ObjectRef::new(ObjectKind::Secret, &spec.name, id)
            }
            Action::CreateConfig(s) => ObjectRef::new(ObjectKind::Config, &s.name, ""),
            Action::UpdateConfig { id, spec, .. } => {
                ObjectRef::new(ObjectKind::Config, &spec.name, id)
            }
            Action::CreateService(s) => {
                ObjectRef::new(ObjectKind::Service, s.name.clone().unwrap_or_default(), "")
            }
            Action::UpdateService { id, spec, .. } => ObjectRef::new(
                ObjectKind::Service,
                spec.name.clone().unwrap_or_default(),
                id,
            ),
            Action::RemoveService { id, name } => ObjectRef::new(ObjectKind::Service, name, id),
            Action::RemoveSecret { id, name } => ObjectRef::new(ObjectKind::Secret, name, id),
            Action::RemoveConfig { id, name } => ObjectRef::new(ObjectKind::Config, name, id),
        }
    }

    /// `create`, `update` or `remove`.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::CreateNetwork(_)
            | Action::CreateSecret(_)
            | Action::CreateConfig(_)
            | Action::CreateService(_) => "create",
            Action::UpdateSecret { .. }
            | Action::UpdateConfig { .. }
            | Action::UpdateService { .. } => "update",
            Action::RemoveNetwork { .. }
            | Action::RemoveService { .. }
            | Action::RemoveSecret { .. }
            | Action::RemoveConfig { .. } => "remove",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let object = self.object();
        write!(f, "{} {} {}", self.verb(), object.kind, object.name)
    }
}

/// The actions that converge one stack, in the order they must run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// The stack.
    pub namespace: String,
    /// Networks, volumes, secrets, configs, services (create/update), pruned services,
    /// superseded secrets and configs — in that order.
    pub actions: Vec<Action>,
}

impl Plan {
    /// Whether the stack is already converged (applying makes no write call).
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

fn rejected(namespace: &str, message: impl Into<String>) -> Error {
    Error::PlanRejected {
        namespace: namespace.to_string(),
        message: message.into(),
    }
}

fn hash<T: Serialize>(namespace: &str, value: &T) -> Result<String> {
    spec::content_hash(value).map_err(|e| rejected(namespace, format!("cannot hash spec: {e}")))
}

fn with_namespace(labels: &mut Option<Map>, namespace: &str) {
    labels
        .get_or_insert_with(Map::new)
        .insert(NAMESPACE_LABEL.into(), namespace.into());
}

/// Stamps owner labels and the spec hash on a label map.
fn finish_labels(labels: &mut Option<Map>, owner: &Owner, spec_hash: &str) {
    let labels = labels.get_or_insert_with(Map::new);
    owner.stamp(labels);
    labels.insert(keys::SPEC_HASH.into(), spec_hash.into());
}

fn spec_hash(labels: &Option<Map>) -> Option<&str> {
    labels.as_ref()?.get(keys::SPEC_HASH).map(String::as_str)
}

/// The name a secret or config (`kind`) named `name` is created under: `<name>-<hash10>` after
/// its content hash `h`, or `name` itself when it is exact. `names` (name → created name) holds
/// the stack's earlier ones of that kind.
///
/// # Errors
/// [`Error::PlanRejected`] for a name longer than Docker's 64 characters once hashed, or a
/// second object of that kind with that name.
fn content_name(
    ns: &str,
    kind: &str,
    name: &str,
    exact: bool,
    h: &str,
    names: &mut BTreeMap<String, String>,
) -> Result<String> {
    let renamed = if exact {
        name.to_string()
    } else {
        format!("{name}-{}", &h[..NAME_HASH_LEN])
    };
    if renamed.len() > MAX_SECRET_NAME_LEN {
        return Err(rejected(
            ns,
            format!("{kind} name {renamed:?} is longer than {MAX_SECRET_NAME_LEN} characters"),
        ));
    }
    if names.insert(name.to_string(), renamed.clone()).is_some() {
        return Err(rejected(ns, format!("two {kind}s are named {name:?}")));
    }
    Ok(renamed)
}

/// The stack exactly as hearth sends it: namespace, owner and `hearth.spec-hash` labels on every
/// object (and on each service's container spec); secrets and configs renamed `<name>-<hash10>` after their content, with the services'
/// references rewritten; the stack's volumes' labels also on the mounts that create them (so a
/// task that creates the volume on another node labels it the same way).
///
/// # Guarantees
/// Pure and deterministic. Each object's `hearth.spec-hash` is the content hash of the object
/// before owner labels were added: it changes when what runs changes, not when the owner does.
///
/// # Errors
/// [`Error::PlanRejected`] for a service without a name, duplicate names, a secret or config
/// name longer than Docker's 64 characters once hashed, or a spec that does not serialise.
pub fn render(desired: &StackSpec, owner: &Owner) -> Result<StackSpec> {
    let ns = desired.namespace.as_str();
    if ns.is_empty() {
        return Err(rejected(ns, "the stack has no name"));
    }
    let mut out = StackSpec {
        namespace: ns.to_string(),
        externals: desired.externals.clone(),
        exact_names: desired.exact_names.clone(),
        generated_secrets: desired.generated_secrets.clone(),
        ..StackSpec::default()
    };

    let mut secret_names = BTreeMap::new();
    for s in &desired.secrets {
        let mut s = s.clone();
        with_namespace(&mut s.labels, ns);
        let exact = desired.exact_names.secrets.contains(&s.name);
        let h = if exact {
            hash(ns, &(&s.data, &s.driver, &s.templating))?
        } else {
            hash(ns, &s)?
        };
        s.name = content_name(ns, "secret", &s.name, exact, &h, &mut secret_names)?;
        finish_labels(&mut s.labels, owner, &h);
        out.secrets.push(s);
    }
    let mut config_names = BTreeMap::new();
    for c in &desired.configs {
        let mut c = c.clone();
        with_namespace(&mut c.labels, ns);
        let exact = desired.exact_names.configs.contains(&c.name);
        let h = if exact {
            hash(ns, &(&c.data, &c.templating))?
        } else {
            hash(ns, &c)?
        };
        c.name = content_name(ns, "config", &c.name, exact, &h, &mut config_names)?;
        finish_labels(&mut c.labels, owner, &h);
        out.configs.push(c);
    }

    let mut seen = BTreeSet::new();
    for n in &desired.networks {
        let mut n = n.clone();
        with_namespace(&mut n.labels, ns);
        let h = hash(ns, &n)?;
        if !seen.insert(n.name.clone()) {
            return Err(rejected(ns, format!("two networks are named {:?}", n.name)));
        }
        finish_labels(&mut n.labels, owner, &h);
        out.networks.push(n);
    }

    // The stack's volumes are created by the tasks that mount them, on their node, from the
    // mount's `VolumeOptions` — the way docker/cli sends them: the volume's labels plus the
    // namespace label, and its driver and options (#13). hearth's own labels stay out of the
    // task template.
    let mut volumes: BTreeMap<String, VolumeSpec> = BTreeMap::new();
    for v in &desired.volumes {
        let mut v = v.clone();
        with_namespace(&mut v.labels, ns);
        if volumes.insert(v.name.clone(), v.clone()).is_some() {
            return Err(rejected(ns, format!("two volumes are named {:?}", v.name)));
        }
        out.volumes.push(v);
    }

    let mut seen = BTreeSet::new();
    for s in &desired.services {
        let mut s = s.clone();
        let name = s
            .name
            .clone()
            .ok_or_else(|| rejected(ns, "a service has no name"))?;
        if !seen.insert(name.clone()) {
            return Err(rejected(ns, format!("two services are named {name:?}")));
        }
        with_namespace(&mut s.labels, ns);
        let container = s
            .task_template
            .as_mut()
            .and_then(|t| t.container_spec.as_mut());
        if let Some(cs) = container {
            with_namespace(&mut cs.labels, ns);
            for r in cs.secrets.iter_mut().flatten() {
                if let Some(new) = secret_names.get(&r.secret_name) {
                    r.secret_name = new.clone();
                    r.secret_id = None;
                }
            }
            for r in cs.configs.iter_mut().flatten() {
                if let Some(new) = config_names.get(&r.config_name) {
                    r.config_name = new.clone();
                    r.config_id = None;
                }
            }
            for m in stack_mounts(&mut cs.mounts, &volumes) {
                if let Some(v) = volumes.get(m.source.as_deref().unwrap_or("")) {
                    let options = m.volume_options.get_or_insert_with(Default::default);
                    options.labels = v.labels.clone();
                    if options.driver_config.is_none()
                        && (v.driver.is_some() || v.driver_opts.is_some())
                    {
                        options.driver_config = Some(spec::Driver {
                            name: v.driver.clone().unwrap_or_default(),
                            options: v.driver_opts.clone(),
                        });
                    }
                }
            }
        }
        let h = hash(ns, &s)?;
        finish_labels(&mut s.labels, owner, &h);
        // hearth's own labels go on the service only, never into the task template: there
        // they would make hearth's template differ from docker's, and a `docker stack deploy`
        // over hearth's stack (or the reverse) would roll every task (#13). Which template a
        // task runs is told by `template_digest` instead.
        out.services.push(s);
    }
    Ok(out)
}

/// The volume mounts of a container that mount one of the stack's own volumes.
fn stack_mounts<'m>(
    mounts: &'m mut Option<Vec<spec::Mount>>,
    volumes: &BTreeMap<String, VolumeSpec>,
) -> impl Iterator<Item = &'m mut spec::Mount> {
    let names: BTreeSet<String> = volumes.keys().cloned().collect();
    mounts.iter_mut().flatten().filter(move |m| {
        m.r#type == Some(MountType::Volume) && m.source.as_ref().is_some_and(|s| names.contains(s))
    })
}

fn observed_hash(labels: &Labels) -> Option<&str> {
    labels.get(keys::SPEC_HASH).map(String::as_str)
}

/// Whether an observed object carries exactly the desired labels.
fn same_labels(want: &Option<Map>, have: &Labels) -> bool {
    let want = want.clone().unwrap_or_default();
    want.len() == have.len() && want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// What a desired secret or config needs.
enum ContentStep {
    /// Create it: none of that name exists.
    Create,
    /// Update its labels (the ID and version of the one that exists).
    Update { id: String, version: u64 },
    /// Nothing.
    Keep,
}

/// What a desired secret or config (`kind`, labelled `labels`) needs when `observed` is the
/// one of its name (`None`: there is none). An exact name (`exact`) must hold the desired
/// content and gets the desired labels; a hashed name names its content, so one that
/// `owner` already owns is kept and one it does not is taken over (labels updated).
///
/// # Errors
/// [`Error::ContentChanged`] when an exact name holds other content ([`content_unchanged`]).
fn content_step(
    namespace: &str,
    kind: ObjectKind,
    exact: bool,
    observed: Option<&crate::swarm::Meta>,
    labels: &Option<Map>,
    owner: &Owner,
) -> Result<ContentStep> {
    let update = |o: &crate::swarm::Meta| ContentStep::Update {
        id: o.id.clone(),
        version: o.version,
    };
    Ok(match observed {
        None => ContentStep::Create,
        Some(o) if exact => {
            content_unchanged(namespace, kind, o, labels)?;
            if same_labels(labels, &o.labels) {
                ContentStep::Keep
            } else {
                update(o)
            }
        }
        Some(o) if owner.is_on(&o.labels) => ContentStep::Keep,
        Some(o) => update(o),
    })
}

/// An explicitly named secret or config that exists under its name: its content must be the
/// desired one (Swarm cannot change it in place). Its hash label tells; one without (made by
/// `docker stack deploy`; Docker never returns a secret's data) is taken as it is.
fn content_unchanged(
    namespace: &str,
    kind: ObjectKind,
    observed: &crate::swarm::Meta,
    want: &Option<Map>,
) -> Result<()> {
    let want = spec_hash(want).unwrap_or_default();
    match observed_hash(&observed.labels) {
        Some(have) if have != want => Err(Error::ContentChanged {
            namespace: namespace.to_string(),
            object: ObjectRef::new(kind, &observed.name, &observed.id),
        }),
        _ => Ok(()),
    }
}

/// Plans the writes that make the stack's namespace match `desired`, owned by `owner`.
///
/// `observed` must hold what one list call per kind returned for the namespace
/// (`com.docker.stack.namespace=<desired.namespace>`); tasks and containers are not needed.
///
/// # Guarantees
/// - Pure. An unchanged stack (same spec hashes, same owner labels) plans no action.
/// - Order: networks, volumes, secrets, configs, then services (create/update), then services
///   no longer desired (prune), then secrets and configs no service refers to any more.
/// - Networks and volumes are create-if-missing. One that hearth created with another spec
///   hash is an [`Error::ImmutableChanged`], except that a network is removed and recreated
///   while the stack has no services (nothing can be using it for this stack). Networks and
///   volumes without a hash label (made by `docker stack deploy` or by a task) are adopted as
///   they are. Networks and volumes dropped from the desired stack stay until teardown: tasks
///   of the previous version may still use them, and volumes hold data.
///
/// # Errors
/// [`Error::PlanRejected`] (see [`render`]) and [`Error::ImmutableChanged`].
///
/// # Caveats
/// A swarm-native rollback (`failure_action: rollback`) returns a service to a spec that may
/// name a secret or config this plan removed as superseded; hearth's own rollback re-applies
/// the previous version, which recreates them by content hash.
pub fn plan(desired: &StackSpec, owner: &Owner, observed: &Observed) -> Result<Plan> {
    plan_rendered(&render(desired, owner)?, owner, observed)
}

/// [`plan`] of a stack already [`render`]ed for `owner`: compares spec hashes and labels only,
/// so a caller that keeps the rendered stack (the warm-app reconciler, while the recipe's
/// inputs are unchanged) plans without hashing any spec again.
///
/// # Errors
/// [`Error::ImmutableChanged`] and [`Error::ContentChanged`].
pub fn plan_rendered(rendered: &StackSpec, owner: &Owner, observed: &Observed) -> Result<Plan> {
    let ns = rendered.namespace.clone();
    let mut actions = Vec::new();
    let immutable = |kind, name: &str, id: &str| Error::ImmutableChanged {
        namespace: ns.clone(),
        object: ObjectRef::new(kind, name, id),
    };

    for n in &rendered.networks {
        let want = spec_hash(&n.labels).unwrap_or_default();
        match observed.networks.iter().find(|o| o.name == n.name) {
            None => actions.push(Action::CreateNetwork(n.clone())),
            Some(o) => match observed_hash(&o.labels) {
                None => {}
                Some(have) if have == want => {}
                Some(_) if observed.services.is_empty() => {
                    actions.push(Action::RemoveNetwork {
                        id: o.id.clone(),
                        name: o.name.clone(),
                    });
                    actions.push(Action::CreateNetwork(n.clone()));
                }
                Some(_) => return Err(immutable(ObjectKind::Network, &o.name, &o.id)),
            },
        }
    }

    // Volumes: none is created here; a task creates its volume on its node (see `render`).

    // Generated secrets: created when missing, never updated (their value is theirs), kept
    // while the stack names them; a new version variable names a new one.
    for g in &rendered.generated_secrets {
        if !observed.secrets.iter().any(|o| o.meta.name == g.name) {
            let mut labels = Some(Map::new());
            with_namespace(&mut labels, &ns);
            let labels = labels.map(|mut l| {
                owner.stamp(&mut l);
                l.insert(keys::GENERATED.into(), g.length.to_string());
                l
            });
            actions.push(Action::CreateSecret(SecretSpec {
                name: g.name.clone(),
                labels,
                data: None,
                driver: None,
                templating: None,
            }));
        }
    }
    for s in &rendered.secrets {
        let exact = rendered.exact_names.secrets.contains(&s.name);
        let seen = observed
            .secrets
            .iter()
            .find(|o| o.meta.name == s.name)
            .map(|o| &o.meta);
        match content_step(&ns, ObjectKind::Secret, exact, seen, &s.labels, owner)? {
            ContentStep::Create => actions.push(Action::CreateSecret(s.clone())),
            ContentStep::Update { id, version } => actions.push(Action::UpdateSecret {
                id,
                version,
                spec: s.clone(),
            }),
            ContentStep::Keep => {}
        }
    }
    for c in &rendered.configs {
        let exact = rendered.exact_names.configs.contains(&c.name);
        let seen = observed
            .configs
            .iter()
            .find(|o| o.meta.name == c.name)
            .map(|o| &o.meta);
        match content_step(&ns, ObjectKind::Config, exact, seen, &c.labels, owner)? {
            ContentStep::Create => actions.push(Action::CreateConfig(c.clone())),
            ContentStep::Update { id, version } => actions.push(Action::UpdateConfig {
                id,
                version,
                spec: c.clone(),
            }),
            ContentStep::Keep => {}
        }
    }

    let mut desired_services = BTreeSet::new();
    for s in &rendered.services {
        let name = s.name.clone().unwrap_or_default();
        let want = spec_hash(&s.labels);
        match observed.services.iter().find(|o| o.meta.name == name) {
            None => actions.push(Action::CreateService(Box::new(s.clone()))),
            Some(o) if observed_hash(&o.meta.labels) == want && owner.is_on(&o.meta.labels) => {}
            Some(o) => actions.push(Action::UpdateService {
                id: o.meta.id.clone(),
                version: o.meta.version,
                spec: Box::new(s.clone()),
            }),
        }
        desired_services.insert(name);
    }
    for o in &observed.services {
        if !desired_services.contains(&o.meta.name) {
            actions.push(Action::RemoveService {
                id: o.meta.id.clone(),
                name: o.meta.name.clone(),
            });
        }
    }

    let keep_secrets: BTreeSet<&str> = rendered
        .secrets
        .iter()
        .map(|s| s.name.as_str())
        .chain(rendered.externals.secrets.iter().map(String::as_str))
        .chain(rendered.generated_secrets.iter().map(|g| g.name.as_str()))
        .collect();
    for o in &observed.secrets {
        if !keep_secrets.contains(o.meta.name.as_str()) {
            actions.push(Action::RemoveSecret {
                id: o.meta.id.clone(),
                name: o.meta.name.clone(),
            });
        }
    }
    let keep_configs: BTreeSet<&str> = rendered
        .configs
        .iter()
        .map(|c| c.name.as_str())
        .chain(rendered.externals.configs.iter().map(String::as_str))
        .collect();
    for o in &observed.configs {
        if !keep_configs.contains(o.meta.name.as_str()) {
            actions.push(Action::RemoveConfig {
                id: o.meta.id.clone(),
                name: o.meta.name.clone(),
            });
        }
    }

    Ok(Plan {
        namespace: ns,
        actions,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::swarm::spec::{
        ContainerSpec, FileTarget, HealthCheck, Mount, NetworkAttachment, SecretReference, TaskSpec,
    };
    use crate::swarm::{Meta, Network, Secret, Service, ServiceMode, Volume};

    /// A two-service stack with a network, a volume, a secret and a config.
    pub(crate) fn sample_stack(ns: &str, image: &str, secret: &str) -> StackSpec {
        let service = |name: &str| ServiceSpec {
            name: Some(format!("{ns}_{name}")),
            task_template: Some(TaskSpec {
                container_spec: Some(ContainerSpec {
                    image: Some(image.into()),
                    args: Some(vec!["/bin/serve".into()]),
                    health_check: Some(HealthCheck {
                        test: Some(vec!["CMD".into(), "/bin/healthcheck".into()]),
                        interval: Some(1_000_000_000),
                        ..Default::default()
                    }),
                    stop_grace_period: Some(2_000_000_000),
                    secrets: Some(vec![SecretReference {
                        file: Some(FileTarget {
                            name: "token".into(),
                            uid: "0".into(),
                            gid: "0".into(),
                            mode: 0o444,
                        }),
                        secret_id: None,
                        secret_name: format!("{ns}_token"),
                    }]),
                    configs: Some(vec![spec::ConfigReference {
                        file: Some(FileTarget {
                            name: "/etc/app.conf".into(),
                            uid: "0".into(),
                            gid: "0".into(),
                            mode: 0o444,
                        }),
                        config_id: None,
                        config_name: format!("{ns}_conf"),
                    }]),
                    mounts: Some(vec![Mount {
                        r#type: Some(MountType::Volume),
                        source: Some(format!("{ns}_data")),
                        target: Some(format!("/data/{name}")),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                networks: Some(vec![NetworkAttachment {
                    target: format!("{ns}_default"),
                    aliases: Some(vec![name.into()]),
                    driver_opts: None,
                }]),
                ..Default::default()
            }),
            mode: Some(spec::ServiceMode::replicated(Some(1))),
            endpoint_spec: Some(spec::EndpointSpec {
                mode: Some(spec::EndpointMode::Dnsrr),
                ports: None,
            }),
            ..Default::default()
        };
        let mut secret_spec = SecretSpec {
            name: format!("{ns}_token"),
            ..Default::default()
        };
        secret_spec.set_data(secret.as_bytes());
        let mut config_spec = ConfigSpec {
            name: format!("{ns}_conf"),
            ..Default::default()
        };
        config_spec.set_data(b"listen 8080\n");
        StackSpec {
            namespace: ns.into(),
            services: vec![service("api"), service("web")],
            networks: vec![NetworkSpec {
                name: format!("{ns}_default"),
                driver: Some("overlay".into()),
                ..Default::default()
            }],
            volumes: vec![VolumeSpec {
                name: format!("{ns}_data"),
                ..Default::default()
            }],
            secrets: vec![secret_spec],
            configs: vec![config_spec],
            externals: Default::default(),
            exact_names: Default::default(),
            generated_secrets: Vec::new(),
        }
    }

    fn owner() -> Owner {
        Owner::new("WarmApp", "shop").with_label("hearth.test", "1")
    }

    fn meta(id: &str, name: &str, labels: &Option<Map>) -> Meta {
        Meta {
            id: id.into(),
            name: name.into(),
            version: 7,
            labels: labels.clone().unwrap_or_default().into(),
            created_at: None,
            updated_at: None,
        }
    }

    /// What the swarm would list after `stack` was applied as rendered.
    fn observed_after(stack: &StackSpec, owner: &Owner) -> Observed {
        let r = render(stack, owner).unwrap();
        Observed {
            services: r
                .services
                .iter()
                .map(|s| Service {
                    meta: meta(
                        &format!("id-{}", s.name.clone().unwrap()),
                        s.name.as_deref().unwrap(),
                        &s.labels,
                    ),
                    image: None,
                    mode: ServiceMode::Replicated(1),
                    volume_sources: Vec::new(),
                    template_digest: None,
                })
                .collect(),
            networks: r
                .networks
                .iter()
                .map(|n| Network {
                    id: format!("id-{}", n.name),
                    name: n.name.clone(),
                    driver: "overlay".into(),
                    scope: "swarm".into(),
                    labels: n.labels.clone().unwrap_or_default().into(),
                    created_at: None,
                })
                .collect(),
            volumes: r
                .volumes
                .iter()
                .map(|v| Volume {
                    name: v.name.clone(),
                    driver: "local".into(),
                    labels: v.labels.clone().unwrap_or_default().into(),
                    created_at: None,
                })
                .collect(),
            secrets: r
                .secrets
                .iter()
                .map(|s| Secret {
                    meta: meta(&format!("id-{}", s.name), &s.name, &s.labels),
                })
                .collect(),
            configs: r
                .configs
                .iter()
                .map(|c| crate::swarm::Config {
                    meta: meta(&format!("id-{}", c.name), &c.name, &c.labels),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn verbs(plan: &Plan) -> Vec<String> {
        plan.actions.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_generated_secret_is_created_without_data_kept_while_named_and_pruned_when_renamed() {
        use crate::swarm::spec::GeneratedSecret;
        let mut stack = sample_stack("s", "img:1", "pw");
        stack.generated_secrets = vec![GeneratedSecret {
            name: "s_key_v1".into(),
            length: 24,
        }];
        let p = plan(&stack, &owner(), &Observed::default()).unwrap();
        let created: Vec<&SecretSpec> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateSecret(s) if s.name == "s_key_v1" => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(created.len(), 1, "{:?}", verbs(&p));
        assert_eq!(
            created[0].data, None,
            "the value is made at apply time only"
        );
        let labels = created[0].labels.clone().unwrap();
        assert_eq!(labels[keys::GENERATED], "24");
        assert_eq!(labels[NAMESPACE_LABEL], "s");
        let first_service = verbs(&p)
            .iter()
            .position(|v| v.starts_with("create service"))
            .unwrap();
        let secret_at = verbs(&p)
            .iter()
            .position(|v| v == "create secret s_key_v1")
            .unwrap();
        assert!(secret_at < first_service, "{:?}", verbs(&p));

        // Applied: nothing to do while the stack names it.
        let mut seen = observed_after(&stack, &owner());
        seen.secrets.push(Secret {
            meta: meta("id-gen", "s_key_v1", &Some(labels.clone())),
        });
        assert!(plan(&stack, &owner(), &seen).unwrap().is_empty());

        // A version bump names a new secret: created, and the old one pruned.
        stack.generated_secrets[0].name = "s_key_v2".into();
        let v = verbs(&plan(&stack, &owner(), &seen).unwrap());
        assert!(v.contains(&"create secret s_key_v2".to_string()), "{v:?}");
        assert!(
            v.iter().any(|x| x.starts_with("remove secret s_key_v1")),
            "{v:?}"
        );
    }

    #[test]
    fn an_empty_namespace_plans_every_object_in_dependency_order() {
        let stack = sample_stack("s", "img:1", "pw");
        let plan = plan(&stack, &owner(), &Observed::default()).unwrap();
        let v = verbs(&plan);
        // No volume: the tasks create it (#13).
        assert_eq!(v.len(), 5, "{v:?}");
        assert_eq!(v[0], "create network s_default");
        assert!(v[1].starts_with("create secret s_token-"), "{v:?}");
        assert!(v[2].starts_with("create config s_conf-"), "{v:?}");
        assert_eq!(&v[3..], ["create service s_api", "create service s_web"]);
    }

    #[test]
    fn every_object_carries_the_namespace_owner_and_hash_labels() {
        let r = render(&sample_stack("s", "img:1", "pw"), &owner()).unwrap();
        let check = |labels: &Option<Map>| {
            let l = labels.as_ref().unwrap();
            assert_eq!(l.get(NAMESPACE_LABEL).unwrap(), "s");
            assert_eq!(l.get(keys::MANAGED_BY).unwrap(), "hearth");
            assert_eq!(l.get(keys::KIND).unwrap(), "WarmApp");
            assert_eq!(l.get(keys::NAME).unwrap(), "shop");
            assert_eq!(l.get("hearth.test").unwrap(), "1");
            assert_eq!(l.get(keys::SPEC_HASH).unwrap().len(), 64);
        };
        for s in &r.services {
            check(&s.labels);
            let cs = s
                .task_template
                .as_ref()
                .unwrap()
                .container_spec
                .as_ref()
                .unwrap();
            assert_eq!(
                cs.labels.as_ref().unwrap().get(NAMESPACE_LABEL).unwrap(),
                "s"
            );
            // hearth's own labels stay out of the task template (#13): docker's has none.
            let container_labels = cs.labels.as_ref().unwrap();
            assert!(
                container_labels.keys().all(|k| !k.starts_with("hearth.")),
                "{container_labels:?}"
            );
            // The mount creates the volume with the volume's own labels.
            let mount = &cs.mounts.as_ref().unwrap()[0];
            assert_eq!(
                mount.volume_options.as_ref().unwrap().labels,
                r.volumes[0].labels
            );
        }
        r.networks.iter().for_each(|n| check(&n.labels));
        // Volumes are made by tasks from the mounts, with docker's labels only (#13).
        for v in &r.volumes {
            let l = v.labels.as_ref().unwrap();
            assert_eq!(l.get(NAMESPACE_LABEL).unwrap(), "s");
            assert!(l.keys().all(|k| !k.starts_with("hearth.")), "{l:?}");
        }
        r.secrets.iter().for_each(|s| check(&s.labels));
        r.configs.iter().for_each(|c| check(&c.labels));
    }

    #[test]
    fn an_unchanged_stack_plans_nothing() {
        let stack = sample_stack("s", "img:1", "pw");
        let observed = observed_after(&stack, &owner());
        assert!(plan(&stack, &owner(), &observed).unwrap().is_empty());
    }

    #[test]
    fn a_changed_image_updates_only_the_services_at_their_observed_version() {
        let observed = observed_after(&sample_stack("s", "img:1", "pw"), &owner());
        let plan = plan(&sample_stack("s", "img:2", "pw"), &owner(), &observed).unwrap();
        assert_eq!(
            verbs(&plan),
            ["update service s_api", "update service s_web"]
        );
        assert!(matches!(
            &plan.actions[0],
            Action::UpdateService { id, version: 7, .. } if id == "id-s_api"
        ));
    }

    #[test]
    fn a_changed_secret_gets_a_new_name_and_the_old_one_is_removed_after_the_services() {
        let observed = observed_after(&sample_stack("s", "img:1", "pw"), &owner());
        let old = observed.secrets[0].meta.name.clone();
        let plan = plan(&sample_stack("s", "img:1", "new-pw"), &owner(), &observed).unwrap();
        let v = verbs(&plan);
        assert_eq!(v.len(), 4, "{v:?}");
        let Action::CreateSecret(new) = &plan.actions[0] else {
            panic!("{v:?}")
        };
        assert_ne!(new.name, old);
        assert!(new.name.starts_with("s_token-"));
        assert_eq!(&v[1..3], ["update service s_api", "update service s_web"]);
        let Action::UpdateService { spec, .. } = &plan.actions[1] else {
            panic!()
        };
        let refs = spec
            .task_template
            .as_ref()
            .unwrap()
            .container_spec
            .as_ref()
            .unwrap()
            .secrets
            .as_ref()
            .unwrap();
        assert_eq!(refs[0].secret_name, new.name);
        assert_eq!(v[3], format!("remove secret {old}"));
    }

    #[test]
    fn services_no_longer_desired_are_pruned_after_the_others() {
        let observed = observed_after(&sample_stack("s", "img:1", "pw"), &owner());
        let mut smaller = sample_stack("s", "img:1", "pw");
        smaller
            .services
            .retain(|s| s.name.as_deref() == Some("s_web"));
        let plan = plan(&smaller, &owner(), &observed).unwrap();
        assert_eq!(verbs(&plan), ["remove service s_api"]);
    }

    #[test]
    fn an_owner_change_updates_labels_but_not_the_spec_hash() {
        let observed = observed_after(&sample_stack("s", "img:1", "pw"), &owner());
        let other = Owner::new("Run", "r-1").with_label("hearth.test", "1");
        let plan = plan(&sample_stack("s", "img:1", "pw"), &other, &observed).unwrap();
        let v = verbs(&plan);
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(v[0].starts_with("update secret s_token-"));
        assert!(v[1].starts_with("update config s_conf-"));
        let Action::UpdateService { spec, .. } = &plan.actions[2] else {
            panic!()
        };
        assert_eq!(
            spec_hash(&spec.labels),
            observed_hash(&observed.services[0].meta.labels)
        );
    }

    #[test]
    fn a_changed_network_is_an_error_while_services_run_and_recreated_otherwise() {
        let mut observed = observed_after(&sample_stack("s", "img:1", "pw"), &owner());
        let mut changed = sample_stack("s", "img:1", "pw");
        changed.networks[0].internal = Some(true);
        let err = plan(&changed, &owner(), &observed).unwrap_err();
        assert!(matches!(err, Error::ImmutableChanged { .. }), "{err}");
        assert!(err.to_string().contains("network s_default"), "{err}");
        observed.services.clear();
        let plan = plan(&changed, &owner(), &observed).unwrap();
        let v = verbs(&plan);
        assert_eq!(
            &v[..2],
            ["remove network s_default", "create network s_default"]
        );
    }

    #[test]
    fn a_changed_volume_changes_the_mounts_and_creates_nothing() {
        // As with docker: the mounts carry the new driver; an existing volume stays as it is.
        let observed = observed_after(&sample_stack("s", "img:1", "pw"), &owner());
        let mut changed = sample_stack("s", "img:1", "pw");
        changed.volumes[0].driver = Some("other".into());
        let v = verbs(&plan(&changed, &owner(), &observed).unwrap());
        assert_eq!(v, ["update service s_api", "update service s_web"]);
    }

    fn exact(mut stack: StackSpec) -> StackSpec {
        stack.configs[0].name = "exact_conf_v1".into();
        stack.secrets[0].name = "exact_token_v1".into();
        stack.exact_names.configs.insert("exact_conf_v1".into());
        stack.exact_names.secrets.insert("exact_token_v1".into());
        for s in &mut stack.services {
            let cs = s
                .task_template
                .as_mut()
                .unwrap()
                .container_spec
                .as_mut()
                .unwrap();
            cs.configs.as_mut().unwrap()[0].config_name = "exact_conf_v1".into();
            cs.secrets.as_mut().unwrap()[0].secret_name = "exact_token_v1".into();
        }
        stack
    }

    #[test]
    fn an_explicit_name_is_kept_exactly_and_referred_to_so() {
        let r = render(&exact(sample_stack("s", "img:1", "pw")), &owner()).unwrap();
        assert_eq!(r.configs[0].name, "exact_conf_v1");
        assert_eq!(r.secrets[0].name, "exact_token_v1");
        let cs = r.services[0]
            .task_template
            .as_ref()
            .unwrap()
            .container_spec
            .as_ref()
            .unwrap();
        assert_eq!(cs.configs.as_ref().unwrap()[0].config_name, "exact_conf_v1");
        assert_eq!(
            cs.secrets.as_ref().unwrap()[0].secret_name,
            "exact_token_v1"
        );
        // without `name:` the content-hash suffix stays
        let r = render(&sample_stack("s", "img:1", "pw"), &owner()).unwrap();
        assert!(r.configs[0].name.starts_with("s_conf-"));
    }

    #[test]
    fn new_content_under_an_explicit_name_is_refused_naming_the_object() {
        let observed = observed_after(&exact(sample_stack("s", "img:1", "pw")), &owner());
        // unchanged: nothing to do
        let same = exact(sample_stack("s", "img:1", "pw"));
        assert!(plan(&same, &owner(), &observed).unwrap().is_empty());
        // the secret's content changed, its name did not
        let changed = exact(sample_stack("s", "img:1", "pw2"));
        let err = plan(&changed, &owner(), &observed).unwrap_err();
        assert!(matches!(err, Error::ContentChanged { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("secret exact_token_v1"), "{message}");
        assert!(
            message.contains("bump the version in its name"),
            "{message}"
        );
        assert!(!err.is_retryable());
        // only its labels changed: an update, as docker allows
        let mut relabelled = exact(sample_stack("s", "img:1", "pw"));
        relabelled.configs[0].labels = Some([("x".to_string(), "1".to_string())].into());
        let v = verbs(&plan(&relabelled, &owner(), &observed).unwrap());
        assert_eq!(v, ["update config exact_conf_v1"]);
    }

    #[test]
    fn objects_without_a_hash_label_are_adopted_as_they_are() {
        let mut observed = observed_after(&sample_stack("s", "img:1", "pw"), &owner());
        observed.networks[0].labels.remove(keys::SPEC_HASH);
        observed.volumes[0].labels.remove(keys::SPEC_HASH);
        let mut changed = sample_stack("s", "img:1", "pw");
        changed.networks[0].internal = Some(true);
        assert!(plan(&changed, &owner(), &observed).unwrap().is_empty());
    }

    #[test]
    fn duplicate_and_overlong_names_are_rejected() {
        let mut stack = sample_stack("s", "img:1", "pw");
        stack.services.push(stack.services[0].clone());
        assert!(matches!(
            render(&stack, &owner()),
            Err(Error::PlanRejected { .. })
        ));
        let mut stack = sample_stack("s", "img:1", "pw");
        stack.secrets[0].name = "x".repeat(60);
        let err = render(&stack, &owner()).unwrap_err();
        assert!(err.to_string().contains("longer than 64"), "{err}");
    }
}

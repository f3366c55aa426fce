//! Docker's label names that hearth reads or writes: the stack labels `docker stack deploy`
//! sets and the labels swarm puts on a task's container. hearth's own labels (owner, spec
//! hash, instance, …) are in [`crd::names::labels`].

/// Groups a stack's objects (`docker stack deploy` sets it on every object it creates).
pub const NAMESPACE: &str = "com.docker.stack.namespace";
/// The image as written in the compose file (`docker stack deploy` sets it on services).
pub const IMAGE: &str = "com.docker.stack.image";
/// On a task's container: its service's ID.
pub const SERVICE_ID: &str = "com.docker.swarm.service.id";
/// On a task's container: its service's name.
pub const SERVICE_NAME: &str = "com.docker.swarm.service.name";
/// On a task's container: its task's ID.
pub const TASK_ID: &str = "com.docker.swarm.task.id";
/// On a task's container: the ID of the node it runs on.
pub const NODE_ID: &str = "com.docker.swarm.node.id";

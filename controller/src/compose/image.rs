//! Image references as docker's API client writes them into a service spec: untagged → `:latest`.
//!
//! `docker stack deploy` (and `docker service create/update`) does not send the image as the
//! compose file writes it: the Go client's `ServiceCreate`/`ServiceUpdate` "ensure that the image
//! is tagged" — it parses the reference with distribution's `ParseNormalizedNamed`, adds the
//! default tag `latest` to a reference with neither tag nor digest (`TagNameOnly`) and writes it
//! back in its familiar form (`FamiliarString`: no `docker.io/`, no `library/` for official
//! images). A reference it cannot parse is sent unchanged (the daemon then rejects it or not).
//! The `com.docker.stack.image` label keeps the image as written.
//!
//! The grammar is the one docker 20.10 (the engine and reference CLI on our test bed) vendors
//! from `github.com/docker/distribution/reference`.

/// Docker Hub's canonical domain.
const DEFAULT_DOMAIN: &str = "docker.io";
/// Docker Hub's legacy domain, read as [`DEFAULT_DOMAIN`].
const LEGACY_DOMAIN: &str = "index.docker.io";
/// Namespace of Docker Hub's official images.
const OFFICIAL_NAMESPACE: &str = "library";
/// The tag docker adds to a reference with neither tag nor digest.
const DEFAULT_TAG: &str = "latest";
/// Longest accepted repository name, domain included.
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// The image reference docker's client puts into a service spec for `image`.
///
/// # Guarantees
/// - `busybox` → `busybox:latest`; `host:5000/img` → `host:5000/img:latest` (a port is not a
///   tag); `img:tag`, `img@sha256:…` and `img:tag@sha256:…` keep their tag and digest.
/// - Familiar form, as docker writes it: `docker.io/library/busybox:1` → `busybox:1`,
///   `library/busybox` → `busybox:latest`, `index.docker.io/foo/bar` → `foo/bar:latest`.
/// - A reference distribution's parser refuses (upper-case repository, bad digest, 64 hex
///   digits, …) is returned unchanged, as docker sends it unchanged.
///
/// # Caveats
/// Newer distribution releases (docker 25+) also accept IPv6 registry hosts (`[::1]:5000/img`)
/// and read an upper-case first component (`Foo/bar`) as a registry host; docker 20.10 does
/// neither, and neither does this function: both are returned unchanged.
pub(crate) fn with_default_tag(image: &str) -> String {
    match parse_normalized(image) {
        Some(r) => r.familiar_string(),
        None => image.to_owned(),
    }
}

/// A parsed reference: a repository name with an optional tag and digest.
struct Reference<'a> {
    /// Full repository name, domain included (`docker.io/library/busybox`).
    name: String,
    /// Tag, without the `:`.
    tag: Option<&'a str>,
    /// Digest, without the `@`.
    digest: Option<&'a str>,
}

impl Reference<'_> {
    /// `FamiliarString(TagNameOnly(ref))`.
    fn familiar_string(&self) -> String {
        let mut out = familiar_name(&self.name);
        match (self.tag, self.digest) {
            (None, None) => {
                out.push(':');
                out.push_str(DEFAULT_TAG);
            }
            (tag, digest) => {
                if let Some(tag) = tag {
                    out.push(':');
                    out.push_str(tag);
                }
                if let Some(digest) = digest {
                    out.push('@');
                    out.push_str(digest);
                }
            }
        }
        out
    }
}

/// Drops the default domain, and `library/` from official images (`library/<one component>`).
fn familiar_name(name: &str) -> String {
    let Some(path) = name
        .strip_prefix(DEFAULT_DOMAIN)
        .and_then(|p| p.strip_prefix('/'))
    else {
        return name.to_owned();
    };
    match path.split_once('/') {
        Some((OFFICIAL_NAMESPACE, rest)) if !rest.contains('/') => rest.to_owned(),
        _ => path.to_owned(),
    }
}

/// `ParseNormalizedNamed`: the default domain and namespace added, then [`parse`].
fn parse_normalized(s: &str) -> Option<Reference<'_>> {
    // A bare 64-hex string is an image ID, never a name.
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9')) {
        return None;
    }
    let (domain, remainder) = split_docker_domain(s);
    let remote_name = remainder.split(':').next().unwrap_or(remainder);
    if remote_name.to_lowercase() != remote_name {
        return None;
    }
    let (name, tag, digest) = parse(remainder)?;
    let name = match domain {
        Some(d) => format!("{d}/{name}"),
        None if name.contains('/') => format!("{DEFAULT_DOMAIN}/{name}"),
        None => format!("{DEFAULT_DOMAIN}/{OFFICIAL_NAMESPACE}/{name}"),
    };
    if name.len() > NAME_TOTAL_LENGTH_MAX || !valid_name(&name) {
        return None;
    }
    Some(Reference { name, tag, digest })
}

/// `splitDockerDomain`: the registry host if the first component looks like one (has a `.` or
/// a `:`, or is `localhost`), `None` for Docker Hub; and the rest.
fn split_docker_domain(s: &str) -> (Option<&str>, &str) {
    match s.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            if first == LEGACY_DOMAIN || first == DEFAULT_DOMAIN {
                (None, rest)
            } else {
                (Some(first), rest)
            }
        }
        _ => (None, s),
    }
}

/// Splits `name[:tag][@digest]` and checks the tag and the digest; the name is checked by
/// [`valid_name`] once its domain is known.
fn parse(s: &str) -> Option<(&str, Option<&str>, Option<&str>)> {
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    if digest.is_some_and(|d| !valid_digest(d)) {
        return None;
    }
    // A `:` after the last `/` starts the tag; one before it is a registry port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if tag.is_some_and(|t| !valid_tag(t)) {
        return None;
    }
    Some((name, tag, digest))
}

/// `[domain/]component(/component)*`.
fn valid_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    let all_components = |ps: &[&str]| !ps.is_empty() && ps.iter().all(|p| valid_component(p));
    all_components(&parts)
        || (parts.len() > 1 && valid_domain(parts[0]) && all_components(&parts[1..]))
}

/// A path component: `[a-z0-9]+` runs joined by `.`, `_`, `__` or one or more `-`.
fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut separator = String::new();
    for &b in bytes {
        if alnum(b) {
            if !matches!(separator.as_str(), "" | "." | "_" | "__")
                && !separator.bytes().all(|s| s == b'-')
            {
                return false;
            }
            separator.clear();
        } else {
            separator.push(char::from(b));
        }
    }
    true
}

/// A registry host: dot-separated `[a-zA-Z0-9]` labels (inner `-` allowed), optional `:port`.
fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (d, None),
    };
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        match (b.first(), b.last()) {
            (Some(f), Some(e)) => {
                f.is_ascii_alphanumeric()
                    && e.is_ascii_alphanumeric()
                    && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            }
            _ => false,
        }
    };
    host.split('.').all(label_ok)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[\w][\w.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// A digest go-digest validates: a known algorithm and exactly its length of lower-case hex.
fn valid_digest(d: &str) -> bool {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return false;
    };
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == want && hex.bytes().all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:2a6f0e5d9bbd6e1b8c4f6e6e4a1a7c1b8e0f1d2c3b4a59687766554433221100";

    #[test]
    fn untagged_references_get_latest_and_others_keep_what_they_have() {
        let digested = format!("busybox@{DIGEST}");
        let both = format!("busybox:1.36@{DIGEST}");
        let hub_digested = format!("docker.io/library/busybox@{DIGEST}");
        let cases: &[(&str, &str)] = &[
            ("busybox", "busybox:latest"),
            ("busybox:1.36", "busybox:1.36"),
            ("busybox:latest", "busybox:latest"),
            ("prom/alertmanager", "prom/alertmanager:latest"),
            ("hearth-fixture/webapp:1.0.0", "hearth-fixture/webapp:1.0.0"),
            ("a/b/c", "a/b/c:latest"),
            // a port is not a tag
            ("host:5000/img", "host:5000/img:latest"),
            ("host:5000/img:2", "host:5000/img:2"),
            ("localhost/img", "localhost/img:latest"),
            ("localhost:5000/ns/img", "localhost:5000/ns/img:latest"),
            (
                "ghcr.io/baosystems/postgis",
                "ghcr.io/baosystems/postgis:latest",
            ),
            (
                "Registry.Example.com/img",
                "Registry.Example.com/img:latest",
            ),
            // the familiar form: no docker.io/, no library/ for official images
            ("library/busybox", "busybox:latest"),
            ("docker.io/busybox", "busybox:latest"),
            ("docker.io/library/busybox:1.36", "busybox:1.36"),
            ("index.docker.io/foo/bar", "foo/bar:latest"),
            ("library/a/b", "library/a/b:latest"),
            ("docker.io/library/a/b:1", "library/a/b:1"),
            // digests are kept, with or without a tag, and suppress the default tag
            (&digested, &digested),
            (&both, &both),
            (&hub_digested, &digested),
            // separators in components and words in tags
            ("a.b_c__d---e/f:V1.0_rc-1", "a.b_c__d---e/f:V1.0_rc-1"),
            ("abcdef123456", "abcdef123456:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(with_default_tag(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn references_docker_cannot_parse_are_sent_unchanged() {
        let long = format!("{}/img", "a".repeat(250));
        let cases = [
            "Busybox",
            "busybox:Tag/x",
            "host:5000/Img",
            "Foo/bar",
            "busybox:",
            "busybox:-tag",
            "busybox:.tag",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a//b",
            "/a",
            "a/",
            "host:port/img",
            "[::1]:5000/img",
            "busybox@sha256:abc",
            "busybox@md5:0123456789abcdef0123456789abcdef",
            "2a6f0e5d9bbd6e1b8c4f6e6e4a1a7c1b8e0f1d2c3b4a59687766554433221100",
            "bad space",
            "",
            long.as_str(),
        ];
        for input in cases {
            assert_eq!(with_default_tag(input), input, "input {input:?}");
        }
    }

    #[test]
    fn digest_case_and_length_are_checked() {
        let upper = format!(
            "busybox@{}",
            DIGEST.to_uppercase().replace("SHA256", "sha256")
        );
        assert_eq!(with_default_tag(&upper), upper);
        let short = &DIGEST[..DIGEST.len() - 1];
        let short = format!("busybox@{short}");
        assert_eq!(with_default_tag(&short), short);
        let sha512 = format!("busybox@sha512:{}", "0".repeat(128));
        assert_eq!(with_default_tag(&sha512), sha512);
    }
}

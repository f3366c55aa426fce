//! Value parsers with docker's exact rules: durations, byte sizes, CPUs, shell words, port
//! specs, short volume specs and env files.

/// Go's `time.ParseDuration`, in nanoseconds.
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    let err = || format!("invalid duration {s:?}");
    let mut rest = s;
    let mut negative = false;
    if let Some(r) = rest.strip_prefix('-') {
        negative = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(err());
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit in duration {s:?}")),
            _ => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        let value: f64 = num.parse().map_err(|_| err())?;
        total += value * scale;
    }
    if total > i64::MAX as f64 {
        return Err(err());
    }
    let ns = total.round() as i64;
    Ok(if negative { -ns } else { ns })
}

/// go-units `RAMInBytes`: `512M`, `1.5g`, `100kb`, `1024` (binary multiples).
pub(crate) fn parse_ram_bytes(s: &str) -> Result<i64, String> {
    let err = || format!("invalid size: {s:?}");
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    let num = &s[..i];
    if num.is_empty() || !num.as_bytes()[0].is_ascii_digit() || num.ends_with('.') {
        return Err(err());
    }
    let mut suffix = &s[i..];
    if let Some(r) = suffix.strip_prefix(' ') {
        suffix = r;
    }
    let lower = suffix.to_ascii_lowercase();
    let mut chars = lower.as_str();
    let mult: f64 = match chars.chars().next() {
        Some('k') => 1024.0,
        Some('m') => 1024.0 * 1024.0,
        Some('g') => 1024.0f64.powi(3),
        Some('t') => 1024.0f64.powi(4),
        Some('p') => 1024.0f64.powi(5),
        _ => 1.0,
    };
    if mult > 1.0 {
        chars = &chars[1..];
    }
    if let Some(r) = chars.strip_prefix('i') {
        chars = r;
    }
    if let Some(r) = chars.strip_prefix('b') {
        chars = r;
    }
    if !chars.is_empty() {
        return Err(err());
    }
    let value: f64 = num.parse().map_err(|_| err())?;
    Ok((value * mult) as i64)
}

/// docker's `opts.ParseCPUs`: a rational number of CPUs → NanoCPUs; must be exact.
pub(crate) fn parse_cpus(s: &str) -> Result<i64, String> {
    let (num, den) =
        parse_rational(s).ok_or_else(|| format!("failed to parse {s} as a rational number"))?;
    let scaled = num
        .checked_mul(1_000_000_000)
        .ok_or_else(|| format!("value {s} is too large"))?;
    if den == 0 || scaled % den != 0 {
        return Err("value is too precise".into());
    }
    i64::try_from(scaled / den).map_err(|_| format!("value {s} is too large"))
}

/// `a/b`, or a decimal with optional exponent, as an exact fraction.
fn parse_rational(s: &str) -> Option<(i128, i128)> {
    if let Some((a, b)) = s.split_once('/') {
        let a: i128 = a.parse().ok()?;
        let b: i128 = b.parse().ok()?;
        return (b != 0).then_some((a, b));
    }
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (-1, m),
        None => (1, mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits: i128 = format!("{int}{frac}").parse().ok()?;
    let scale = exp - i32::try_from(frac.len()).ok()?;
    if scale.abs() > 30 {
        return None;
    }
    if scale >= 0 {
        Some((
            sign * digits.checked_mul(10i128.pow(scale.unsigned_abs()))?,
            1,
        ))
    } else {
        Some((sign * digits, 10i128.pow(scale.unsigned_abs())))
    }
}

/// google/shlex `Split`, as docker/cli uses it for string `command`/`entrypoint`.
pub(crate) fn shell_split(s: &str) -> Result<Vec<String>, String> {
    #[derive(PartialEq)]
    enum St {
        Start,
        Word,
        Escaping,
        EscapingQuoted,
        Double,
        Single,
        Comment,
    }
    let mut words = Vec::new();
    let mut word = String::new();
    let mut st = St::Start;
    for c in s.chars() {
        match st {
            St::Start => match c {
                ' ' | '\t' | '\r' | '\n' => {}
                '\'' => st = St::Single,
                '"' => st = St::Double,
                '\\' => st = St::Escaping,
                '#' => st = St::Comment,
                _ => {
                    word.push(c);
                    st = St::Word;
                }
            },
            St::Word => match c {
                ' ' | '\t' | '\r' | '\n' => {
                    words.push(std::mem::take(&mut word));
                    st = St::Start;
                }
                '\'' => st = St::Single,
                '"' => st = St::Double,
                '\\' => st = St::Escaping,
                _ => word.push(c),
            },
            St::Escaping => {
                word.push(c);
                st = St::Word;
            }
            St::EscapingQuoted => {
                word.push(c);
                st = St::Double;
            }
            St::Double => match c {
                '"' => st = St::Word,
                '\\' => st = St::EscapingQuoted,
                _ => word.push(c),
            },
            St::Single => match c {
                '\'' => st = St::Word,
                _ => word.push(c),
            },
            St::Comment => {
                if c == '\n' {
                    st = St::Start;
                }
            }
        }
    }
    match st {
        St::Word => words.push(word),
        St::Start | St::Comment => {}
        St::Escaping | St::EscapingQuoted => return Err("EOF found after escape character".into()),
        St::Double => return Err("EOF found when expecting closing quote".into()),
        St::Single => return Err("EOF found when expecting closing quote".into()),
    }
    Ok(words)
}

/// One published port, as docker/cli's loader produces it from the short syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShortPort {
    pub target: u32,
    pub published: u32,
    pub protocol: String,
    /// The host IP docker ignores (it warns and listens on 0.0.0.0).
    pub ignored_ip: Option<String>,
}

fn parse_port_range(s: &str) -> Result<(u32, u32), ()> {
    let parse = |p: &str| p.parse::<u16>().map(u32::from).map_err(|_| ());
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            if b < a {
                return Err(());
            }
            Ok((a, b))
        }
        None => {
            let p = parse(s)?;
            Ok((p, p))
        }
    }
}

/// docker's `nat.ParsePortSpec` + `opts.ConvertPortToPortConfig`:
/// `[ip:][host[-host]:]container[-container][/proto]`.
pub(crate) fn parse_port_spec(spec: &str) -> Result<Vec<ShortPort>, String> {
    let (raw, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_string()),
        None => (spec, "tcp".to_string()),
    };
    if raw.is_empty() {
        return Err(format!("no port specified: {spec}<empty>"));
    }
    if !matches!(proto.to_ascii_lowercase().as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let parts: Vec<&str> = raw.split(':').collect();
    let n = parts.len();
    let container = parts[n - 1];
    let (ip, host) = match n {
        1 => (String::new(), ""),
        2 => (String::new(), parts[0]),
        3 => (parts[0].to_string(), parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2]),
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']').to_string();
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("invalid IP address: {ip}"));
    }
    let (c_start, c_end) =
        parse_port_range(container).map_err(|_| format!("invalid containerPort: {container}"))?;
    let host_range = if host.is_empty() {
        None
    } else {
        Some(parse_port_range(host).map_err(|_| format!("invalid hostPort: {host}"))?)
    };
    if let Some((h_start, h_end)) = host_range {
        if (c_end - c_start) != (h_end - h_start) && c_end != c_start {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {container} and {host}"
            ));
        }
    }
    let ignored_ip = match ip.parse::<std::net::IpAddr>() {
        Ok(addr) if !addr.is_unspecified() => Some(ip.clone()),
        _ => None,
    };
    let mut out = Vec::new();
    for i in 0..=(c_end - c_start) {
        let target = c_start + i;
        match host_range {
            None => out.push(ShortPort {
                target,
                published: 0,
                protocol: proto.to_ascii_lowercase(),
                ignored_ip: ignored_ip.clone(),
            }),
            Some((h_start, h_end)) if c_end == c_start && h_end != h_start => {
                for published in h_start..=h_end {
                    out.push(ShortPort {
                        target,
                        published,
                        protocol: proto.to_ascii_lowercase(),
                        ignored_ip: ignored_ip.clone(),
                    });
                }
            }
            Some((h_start, _)) => out.push(ShortPort {
                target,
                published: h_start + i,
                protocol: proto.to_ascii_lowercase(),
                ignored_ip: ignored_ip.clone(),
            }),
        }
    }
    Ok(out)
}

/// A short volume spec, as docker/cli's `loader.ParseVolume` reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ShortVolume {
    pub kind: &'static str,
    pub source: String,
    pub target: String,
    pub read_only: bool,
    pub nocopy: bool,
    pub propagation: Option<String>,
    /// Options docker ignores without a word (`z`, `cached`, …).
    pub ignored_options: Vec<String>,
}

fn is_windows_drive(buffer: &[char], c: char) -> bool {
    c == ':' && buffer.len() == 1 && buffer[0].is_alphabetic()
}

/// `[source:]target[:options]`; `d:/x` is a Windows path (one letter then `:`), as in docker.
pub(crate) fn parse_volume_spec(spec: &str) -> Result<ShortVolume, String> {
    let mut v = ShortVolume {
        kind: "volume",
        ..Default::default()
    };
    match spec.chars().count() {
        0 => return Err("invalid empty volume spec".into()),
        1 | 2 => {
            v.target = spec.to_string();
            return Ok(v);
        }
        _ => {}
    }
    const END: char = '\u{0}';
    let mut buffer: Vec<char> = Vec::new();
    for c in spec.chars().chain(std::iter::once(END)) {
        if is_windows_drive(&buffer, c) {
            buffer.push(c);
        } else if c == ':' || c == END {
            let text: String = buffer.iter().collect();
            if buffer.is_empty() {
                return Err(format!(
                    "invalid spec: {spec}: empty section between colons"
                ));
            } else if v.source.is_empty() && c == END {
                v.target = text;
            } else if v.source.is_empty() {
                v.source = text;
            } else if v.target.is_empty() {
                v.target = text;
            } else if c == ':' {
                return Err(format!("invalid spec: {spec}: too many colons"));
            } else {
                for option in text.split(',') {
                    match option {
                        "ro" => v.read_only = true,
                        "rw" => v.read_only = false,
                        "nocopy" => v.nocopy = true,
                        "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {
                            v.propagation = Some(option.to_string())
                        }
                        other => v.ignored_options.push(other.to_string()),
                    }
                }
            }
            buffer.clear();
        } else {
            buffer.push(c);
        }
    }
    v.kind = if v.source.is_empty() {
        "volume"
    } else if is_file_path(&v.source) {
        "bind"
    } else {
        "volume"
    };
    Ok(v)
}

fn is_file_path(source: &str) -> bool {
    if source.starts_with(['.', '/', '~']) || source.starts_with("\\\\") {
        return true;
    }
    let mut chars = source.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) => is_windows_drive(&[first], second),
        _ => false,
    }
}

/// docker's `opts.ParseEnvFile` on bytes: `KEY=value` lines kept verbatim; bare `KEY` lines
/// take the value from `env` (dropped when unset); blank and `#` lines skipped.
pub(crate) fn parse_env_file(
    bytes: &[u8],
    env: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, Option<String>)>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "env file is not valid UTF-8".to_string())?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim_start(), Some(v.to_string())),
            None => (line, None),
        };
        if name.is_empty() {
            return Err(format!(
                "no variable name on line '{line}' (line {})",
                n + 1
            ));
        }
        if name.contains(char::is_whitespace) {
            return Err(format!(
                "variable '{name}' contains whitespaces (line {})",
                n + 1
            ));
        }
        match value {
            Some(v) => out.push((name.to_string(), Some(v))),
            None => {
                if let Some(v) = env.get(name) {
                    out.push((name.to_string(), Some(v.clone())));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(parse_duration("10s").unwrap(), 10_000_000_000);
        assert_eq!(parse_duration("1.5h").unwrap(), 5_400_000_000_000);
        assert_eq!(parse_duration("300ms").unwrap(), 300_000_000);
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert_eq!(parse_duration("2m").unwrap(), 120_000_000_000);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn sizes_use_binary_multiples() {
        assert_eq!(parse_ram_bytes("512M").unwrap(), 536_870_912);
        assert_eq!(parse_ram_bytes("4G").unwrap(), 4 * 1024 * 1024 * 1024);
        assert_eq!(parse_ram_bytes("1.5k").unwrap(), 1536);
        assert_eq!(parse_ram_bytes("100mb").unwrap(), 104_857_600);
        assert_eq!(parse_ram_bytes("1024").unwrap(), 1024);
        assert!(parse_ram_bytes("lots").is_err());
        assert!(parse_ram_bytes("12x").is_err());
    }

    #[test]
    fn cpus_become_exact_nanocpus() {
        assert_eq!(parse_cpus("0.5").unwrap(), 500_000_000);
        assert_eq!(parse_cpus("2").unwrap(), 2_000_000_000);
        assert_eq!(parse_cpus("1/4").unwrap(), 250_000_000);
        assert_eq!(parse_cpus("0.001").unwrap(), 1_000_000);
        assert!(parse_cpus("0.0000000001").is_err());
        assert!(parse_cpus("half").is_err());
    }

    #[test]
    fn shell_words_split_like_google_shlex() {
        assert_eq!(shell_split("a b  c").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            shell_split(r#"sh -c "echo $$x 'y'""#).unwrap(),
            ["sh", "-c", "echo $$x 'y'"]
        );
        assert_eq!(shell_split(r"a\ b").unwrap(), ["a b"]);
        assert_eq!(shell_split("it's'' ok'").unwrap(), ["its ok"]);
        assert_eq!(
            shell_split("\"open").unwrap_err(),
            "EOF found when expecting closing quote"
        );
        assert_eq!(shell_split("").unwrap(), Vec::<String>::new());
        assert_eq!(shell_split("a # comment").unwrap(), ["a"]);
    }

    #[test]
    fn port_specs_expand_like_docker() {
        let p = parse_port_spec("8000-8001:80-81/udp").unwrap();
        assert_eq!(
            p.iter()
                .map(|p| (p.published, p.target, p.protocol.as_str()))
                .collect::<Vec<_>>(),
            [(8000, 80, "udp"), (8001, 81, "udp")]
        );
        let p = parse_port_spec("127.0.0.1:9000:9000").unwrap();
        assert_eq!(p[0].ignored_ip.as_deref(), Some("127.0.0.1"));
        let p = parse_port_spec("53").unwrap();
        assert_eq!((p[0].published, p[0].target), (0, 53));
        let p = parse_port_spec(":8080").unwrap();
        assert_eq!((p[0].published, p[0].target), (0, 8080));
        let p = parse_port_spec("8000-8002:80").unwrap();
        assert_eq!(p.len(), 3);
        assert!(parse_port_spec("80-81:90-93").is_err());
        assert!(parse_port_spec("x:80").is_err());
        assert!(parse_port_spec("80/xtp").is_err());
    }

    #[test]
    fn short_volumes_parse_like_docker() {
        let v = parse_volume_spec("d:/x").unwrap();
        assert_eq!(
            (v.kind, v.source.as_str(), v.target.as_str()),
            ("volume", "", "d:/x")
        );
        let v = parse_volume_spec("./rel:/rel:ro").unwrap();
        assert_eq!(
            (v.kind, v.source.as_str(), v.read_only),
            ("bind", "./rel", true)
        );
        let v = parse_volume_spec("named:/n:nocopy").unwrap();
        assert_eq!((v.kind, v.nocopy), ("volume", true));
        let v = parse_volume_spec("/anon").unwrap();
        assert_eq!((v.source.as_str(), v.target.as_str()), ("", "/anon"));
        let v = parse_volume_spec("/a:/b:rshared,z").unwrap();
        assert_eq!(v.propagation.as_deref(), Some("rshared"));
        assert_eq!(v.ignored_options, ["z"]);
        let v = parse_volume_spec("c:\\data:/data").unwrap();
        assert_eq!((v.kind, v.source.as_str()), ("bind", "c:\\data"));
        // A single letter before `:` is a drive letter, so this is `a:b` → `c:d`.
        let v = parse_volume_spec("a:b:c:d").unwrap();
        assert_eq!((v.source.as_str(), v.target.as_str()), ("a:b", "c:d"));
        assert_eq!(parse_volume_spec("/a:/b:z").unwrap().ignored_options, ["z"]);
        assert!(parse_volume_spec("/a:/b:ro:x").is_err());
        assert!(parse_volume_spec("/a::/b").is_err());
    }

    #[test]
    fn env_files_keep_values_and_look_up_bare_names() {
        let env = std::collections::BTreeMap::from([("B".to_string(), "from-env".to_string())]);
        let got = parse_env_file(b"# c\nA=1 2\n  B\nC\n\nD=\n", &env).unwrap();
        assert_eq!(
            got,
            [
                ("A".to_string(), Some("1 2".to_string())),
                ("B".to_string(), Some("from-env".to_string())),
                ("D".to_string(), Some(String::new())),
            ]
        );
        assert!(parse_env_file(b"A B=1\n", &env).is_err());
    }
}

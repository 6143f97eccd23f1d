//! Load scenarios only ever talk to this machine: URLs must name a loopback address, and
//! connections are spread over loopback source addresses.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, bail};
use tokio_tungstenite::tungstenite::http::Uri;

/// Most loopback source addresses a scenario may spread its connections over
/// (127.0.0.2 ..= 127.0.0.201): far more than the ~28k ephemeral ports per address need.
pub(crate) const MAX_SOURCE_ADDRS: u8 = 200;

/// Checks that `url` has one of `schemes` and a loopback host (127.0.0.0/8, `::1` or
/// `localhost` resolving only to those); returns the host's address family's loopback
/// address the URL resolves to.
pub(crate) async fn check_url(url: &str, schemes: &[&str]) -> anyhow::Result<IpAddr> {
    let uri: Uri = url.parse().with_context(|| format!("{url:?} is not a URL"))?;
    let scheme = uri.scheme_str().unwrap_or_default();
    if !schemes.contains(&scheme) {
        bail!("{url:?}: the scheme must be one of {schemes:?}");
    }
    let host = uri.host().with_context(|| format!("{url:?} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) if host.eq_ignore_ascii_case("localhost") => tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .map(|addr| addr.ip())
            .collect(),
        Err(_) => bail!("{url:?}: load scenarios only run against loopback addresses (127.x.y.z, ::1 or localhost)"),
    };
    match addrs.first() {
        Some(first) if addrs.iter().all(IpAddr::is_loopback) => Ok(*first),
        _ => bail!("{url:?}: load scenarios only run against loopback addresses, and {host} resolves to {addrs:?}"),
    }
}

/// Returns the source addresses to spread connections to `server` over: 127.0.0.2 ..=
/// 127.0.0.(count+1) for an IPv4 server, nothing (the kernel's choice, `::1`) for IPv6,
/// whose loopback is a single address.
pub(crate) fn source_addrs(server: IpAddr, count: u8) -> anyhow::Result<Vec<IpAddr>> {
    if count > MAX_SOURCE_ADDRS {
        bail!("at most {MAX_SOURCE_ADDRS} source addresses");
    }
    Ok(match server {
        IpAddr::V4(_) => (0..count).map(|index| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + index))).collect(),
        IpAddr::V6(_) => Vec::new(),
    })
}

/// Raises this process's soft open-files limit to its hard limit (every simulated device
/// holds a socket); returns the new soft limit.
pub(crate) fn raise_open_files_limit() -> anyhow::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_loopback_urls_pass() {
        for url in ["ws://127.0.0.1:7700/v1/sync", "ws://127.3.2.1:1/v1/sync", "ws://[::1]:7700/v1/sync"] {
            assert!(check_url(url, &["ws"]).await.is_ok(), "{url}");
        }
        assert!(check_url("http://127.0.0.1:7701", &["http"]).await.is_ok());
        for url in [
            "ws://10.0.0.1:7700/v1/sync",
            "ws://192.168.1.2/v1/sync",
            "ws://8.8.8.8/v1/sync",
            "ws://example.com/v1/sync",
            "ws://[::2]:1/v1/sync",
            "http://127.0.0.1:7700/v1/sync",
        ] {
            assert!(check_url(url, &["ws"]).await.is_err(), "{url}");
        }
    }

    #[test]
    fn source_addresses_start_at_127_0_0_2() {
        let addrs = source_addrs("127.0.0.1".parse().unwrap(), 3).unwrap();
        assert_eq!(addrs, ["127.0.0.2", "127.0.0.3", "127.0.0.4"].map(|ip| ip.parse::<IpAddr>().unwrap()));
        assert!(source_addrs("::1".parse().unwrap(), 3).unwrap().is_empty());
        assert!(source_addrs("127.0.0.1".parse().unwrap(), 201).is_err());
    }
}

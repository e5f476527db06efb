//! `IP_ADDRESS` auto-detection: the first IPv4 address of the default-route interface,
//! as kube-deploy's `ip -o -4 route show to default`, without running `ip`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("read {}", path.display())]
    ReadRoutes {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "this host has no IPv4 default route, so IP_ADDRESS cannot be detected: pass --ip-address (or set IP_ADDRESS)"
    )]
    NoDefaultRoute,
    #[error(
        "the default-route interface {iface} has no IPv4 address, so IP_ADDRESS cannot be detected: \
         pass --ip-address (or set IP_ADDRESS)"
    )]
    NoAddress { iface: String },
    #[error("list the host's network interfaces (getifaddrs)")]
    ListInterfaces(#[source] std::io::Error),
}

/// The interface of the IPv4 default route with the lowest metric, from a
/// `/proc/net/route`-formatted text.
pub fn default_route_interface(routes: &str) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    routes
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            if f.len() < 8 {
                return None;
            }
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            let metric: u32 = f[6].parse().ok()?;
            (f[1] == "00000000" && f[7] == "00000000" && flags & RTF_UP != 0).then(|| (metric, f[0].to_string()))
        })
        .min()
        .map(|(_, iface)| iface)
}

/// `(interface, address)` for every IPv4 address on this host, in the kernel's order.
pub fn host_ipv4_addresses() -> Result<Vec<(String, Ipv4Addr)>, DetectError> {
    let list = nix::ifaddrs::getifaddrs().map_err(|e| DetectError::ListInterfaces(e.into()))?;
    Ok(list
        .filter_map(|ifa| {
            let addr = ifa.address?.as_sockaddr_in()?.ip();
            Some((ifa.interface_name, addr))
        })
        .collect())
}

/// The first IPv4 address of the default-route interface.
pub fn default_route_ipv4(proc_root: &Path) -> Result<Ipv4Addr, DetectError> {
    let path = proc_root.join("net/route");
    let routes = std::fs::read_to_string(&path).map_err(|source| DetectError::ReadRoutes { path, source })?;
    let iface = default_route_interface(&routes).ok_or(DetectError::NoDefaultRoute)?;
    pick_address(&iface, &host_ipv4_addresses()?)
}

fn pick_address(iface: &str, addrs: &[(String, Ipv4Addr)]) -> Result<Ipv4Addr, DetectError> {
    addrs
        .iter()
        .find(|(name, _)| name == iface)
        .map(|(_, a)| *a)
        .ok_or_else(|| DetectError::NoAddress {
            iface: iface.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t00000000\t0102A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    #[test]
    fn default_route_interface_picks_the_lowest_metric() {
        assert_eq!(default_route_interface(ROUTES).as_deref(), Some("eth0"));
    }

    #[test]
    fn default_route_interface_ignores_down_and_non_default_routes() {
        let routes = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                      eth0\t00000000\t0100000A\t0002\t0\t0\t100\t00000000\n\
                      eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(default_route_interface(routes), None);
    }

    #[test]
    fn default_route_ipv4_without_default_route_says_what_to_pass() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("net")).unwrap();
        std::fs::write(dir.path().join("net/route"), "Iface\tDestination\n").unwrap();
        let err = default_route_ipv4(dir.path()).unwrap_err().to_string();
        assert!(err.contains("--ip-address"), "{err}");
    }

    #[test]
    fn pick_address_takes_the_interface_first_address() {
        let addrs = vec![
            ("lo".to_string(), Ipv4Addr::LOCALHOST),
            ("eth0".to_string(), Ipv4Addr::new(10, 0, 0, 5)),
            ("eth0".to_string(), Ipv4Addr::new(10, 0, 0, 6)),
        ];
        assert_eq!(pick_address("eth0", &addrs).unwrap(), Ipv4Addr::new(10, 0, 0, 5));
        assert!(matches!(
            pick_address("eth9", &addrs),
            Err(DetectError::NoAddress { .. })
        ));
    }

    #[test]
    fn host_ipv4_addresses_include_loopback() {
        let addrs = host_ipv4_addresses().unwrap();
        assert!(addrs.iter().any(|(_, a)| a.is_loopback()), "{addrs:?}");
    }
}

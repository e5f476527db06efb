//! The cluster network every kboot role builds, fixed as in kube-deploy. Here, below
//! both `roles` (which renders it into flags and manifests) and `pki` (which puts the
//! `kubernetes` Service's address into the API server's certificate).

use std::net::Ipv4Addr;

/// The service network and the addresses in it.
pub const SERVICE_CIDR: &str = "10.0.0.0/24";
/// The `kubernetes` Service's cluster IP (first address of [`SERVICE_CIDR`]).
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The cluster DNS Service's address, given to every kubelet.
pub const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
pub const CLUSTER_DOMAIN: &str = "cluster.local";

//! The Kubernetes Container Runtime Interface, generated from the vendored protos in `proto/`
//! (origins in `proto/README.md`).
//!
//! `v1` is what kubelets from 1.20 on speak; `v1alpha2` carries the same messages under the
//! old package name for kubelets up to 1.18 (the last hyperkube images).
#![allow(clippy::all, missing_debug_implementations)]

/// `runtime.v1`: RuntimeService and ImageService.
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

/// `runtime.v1alpha2`: the pre-1.20 package.
pub mod v1alpha2 {
    tonic::include_proto!("runtime.v1alpha2");
}

/// Shows which credential fields are set, never their values.
fn fmt_auth(
    f: &mut std::fmt::Formatter<'_>,
    username: &str,
    server_address: &str,
    secrets: [(&str, &str); 4],
) -> std::fmt::Result {
    let mut d = f.debug_struct("AuthConfig");
    d.field("username", &username).field("server_address", &server_address);
    for (name, value) in secrets {
        d.field(name, &if value.is_empty() { "" } else { "<redacted>" });
    }
    d.finish()
}

macro_rules! redacted_auth_debug {
    ($ty:ty) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                fmt_auth(
                    f,
                    &self.username,
                    &self.server_address,
                    [
                        ("password", &self.password),
                        ("auth", &self.auth),
                        ("identity_token", &self.identity_token),
                        ("registry_token", &self.registry_token),
                    ],
                )
            }
        }
    };
}
redacted_auth_debug!(v1::AuthConfig);
redacted_auth_debug!(v1alpha2::AuthConfig);

#[cfg(test)]
mod tests {
    #[test]
    fn auth_config_debug_hides_secrets() {
        let auth = super::v1::AuthConfig {
            username: "alice".into(),
            password: "hunter2".into(),
            auth: "YWxpY2U6aHVudGVyMg==".into(),
            ..Default::default()
        };
        let shown = format!("{auth:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("hunter2") && !shown.contains("YWxp"), "{shown}");
    }
}

//! Deterministic OCI image building from directories, files and Debian packages.

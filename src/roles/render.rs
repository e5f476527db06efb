//! Plan files rendered from Kubernetes objects: YAML, mode 0644, and an error that
//! names the file when rendering fails. Shared by the components, the bootstrap
//! objects and the DNS add-on.

use std::path::PathBuf;

use serde_json::Value;

use super::RoleError;
use crate::plan::PlanFile;

/// Objects as one multi-document YAML file.
pub(crate) fn objects_yaml(objects: &[Value]) -> Result<String, serde_norway::Error> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(o)?);
    }
    Ok(out)
}

/// A 0644 plan file from rendered YAML, naming the file if rendering failed.
pub(crate) fn rendered_file(
    path: PathBuf,
    content: Result<String, serde_norway::Error>,
) -> Result<PlanFile, RoleError> {
    let content = content.map_err(|source| RoleError::Encode {
        what: path.display().to_string(),
        source,
    })?;
    Ok(PlanFile {
        path,
        mode: 0o644,
        content,
    })
}

/// One object as a YAML plan file.
pub(crate) fn yaml_file(path: PathBuf, value: &Value) -> Result<PlanFile, RoleError> {
    rendered_file(path, serde_norway::to_string(value))
}

//! An image's `/etc/passwd` and `/etc/group`, read through [`RootFs`] and parsed in one
//! place: who `user: name[:group]` is, the groups naming a user (containerd's supplementary
//! groups), a user's home directory.

use std::path::Path;

use super::{InRootError, RootFs};

/// Largest `/etc/passwd` or `/etc/group` kboot reads. Real ones are a few KB; an image
/// carrying a directory's worth of users is a few MB. Bounds kboot's memory for a
/// hostile one (a link to `/dev/zero`, a sparse 10 GB file).
pub const MAX_BYTES: u64 = 16 << 20;

/// One `/etc/passwd` line: `name:password:uid:gid:gecos:home:shell`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One `/etc/group` line: `name:password:gid:member,member`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The entries of a passwd text, in file order; lines that are not entries (comments,
/// NIS `+` lines, short or non-numeric ones) are skipped, as glibc skips them.
pub fn parse_passwd(text: &str) -> Vec<User> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(User {
                name: f[0].to_owned(),
                uid: f[2].trim().parse().ok()?,
                gid: f[3].trim().parse().ok()?,
                home: f.get(5).map(|h| (*h).to_owned()).unwrap_or_default(),
            })
        })
        .collect()
}

/// The entries of a group text, in file order (malformed lines skipped).
pub fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(Group {
                name: f[0].to_owned(),
                gid: f[2].trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The image's users; none when it has no `/etc/passwd`.
pub fn users(root: &RootFs) -> Result<Vec<User>, InRootError> {
    Ok(root
        .read_to_string(Path::new("/etc/passwd"), MAX_BYTES)?
        .map(|t| parse_passwd(&t))
        .unwrap_or_default())
}

/// The image's groups; none when it has no `/etc/group`.
pub fn groups(root: &RootFs) -> Result<Vec<Group>, InRootError> {
    Ok(root
        .read_to_string(Path::new("/etc/group"), MAX_BYTES)?
        .map(|t| parse_group(&t))
        .unwrap_or_default())
}

/// `uid[:gid]` or `name[:group]` (either part numeric or a name) as the image defines it:
/// a numeric uid gets the primary gid `/etc/passwd` gives it (else 0). `None` when a name
/// is not in the image; `/etc/group` is read only for a group name.
pub fn resolve_user(root: &RootFs, spec: &str) -> Result<Option<(u32, u32)>, InRootError> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users = users(root)?;
    let (uid, primary_gid) = match u.parse::<u32>() {
        Ok(uid) => (uid, users.iter().find(|e| e.uid == uid).map_or(0, |e| e.gid)),
        Err(_) => match users.iter().find(|e| e.name == u) {
            Some(e) => (e.uid, e.gid),
            None => return Ok(None),
        },
    };
    let gid = match g {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match groups(root)?.iter().find(|e| e.name == g) {
                Some(e) => e.gid,
                None => return Ok(None),
            },
        },
    };
    Ok(Some((uid, gid)))
}

/// The groups `/etc/group` lists the user with `uid` as a member of (by the name
/// `/etc/passwd` gives that uid), in file order: what containerd adds as supplementary
/// groups under the `Merge` policy. `/etc/group` is not read for a uid without a name.
pub fn supplementary_groups(root: &RootFs, uid: u32) -> Result<Vec<u32>, InRootError> {
    let Some(name) = users(root)?.into_iter().find(|e| e.uid == uid).map(|e| e.name) else {
        return Ok(Vec::new());
    };
    Ok(groups(root)?
        .into_iter()
        .filter(|g| g.members.contains(&name))
        .map(|g| g.gid)
        .collect())
}

/// The home directory `/etc/passwd` gives `uid`, if any.
pub fn home_of(root: &RootFs, uid: u32) -> Result<Option<String>, InRootError> {
    Ok(users(root)?
        .into_iter()
        .find(|e| e.uid == uid)
        .map(|e| e.home)
        .filter(|h| !h.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(passwd: &str, group: &str) -> (tempfile::TempDir, RootFs) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(d.path().join("etc/group"), group).unwrap();
        let r = RootFs::open(d.path()).unwrap();
        (d, r)
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# a comment\n+nis\nbad:x:notanumber:1::/:/bin/sh\n\
                          etcd:x:998:997::/var/lib/etcd:/bin/false\n";
    const GROUP: &str = "root:x:0:\netcd:x:997:\nkvm:x:105:etcd\nwheel:x:10:root, etcd\n";

    #[test]
    fn parse_passwd_skips_what_is_not_an_entry() {
        let users = parse_passwd(PASSWD);
        assert_eq!(
            users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            ["root", "etcd"]
        );
        assert_eq!(users[1].home, "/var/lib/etcd");
    }

    #[test]
    fn resolve_user_by_name_number_and_group() {
        let (_d, r) = root_with(PASSWD, GROUP);
        assert_eq!(resolve_user(&r, "etcd").unwrap(), Some((998, 997)));
        assert_eq!(resolve_user(&r, "998").unwrap(), Some((998, 997)));
        assert_eq!(resolve_user(&r, "4242").unwrap(), Some((4242, 0)));
        assert_eq!(resolve_user(&r, "etcd:kvm").unwrap(), Some((998, 105)));
        assert_eq!(resolve_user(&r, "root:5").unwrap(), Some((0, 5)));
        assert_eq!(resolve_user(&r, "nobody").unwrap(), None);
        assert_eq!(resolve_user(&r, "root:nogroup").unwrap(), None);
    }

    #[test]
    fn supplementary_groups_lists_the_groups_naming_the_user() {
        let (_d, r) = root_with(PASSWD, GROUP);
        assert_eq!(supplementary_groups(&r, 998).unwrap(), vec![105, 10]);
        assert_eq!(supplementary_groups(&r, 0).unwrap(), vec![10]);
        assert!(supplementary_groups(&r, 4242).unwrap().is_empty());
    }

    #[test]
    fn home_of_reads_the_sixth_field() {
        let (_d, r) = root_with(PASSWD, GROUP);
        assert_eq!(home_of(&r, 998).unwrap().as_deref(), Some("/var/lib/etcd"));
        assert_eq!(home_of(&r, 7).unwrap(), None);
    }

    #[test]
    fn an_image_without_passwd_has_no_users() {
        let d = tempfile::tempdir().unwrap();
        let r = RootFs::open(d.path()).unwrap();
        assert_eq!(resolve_user(&r, "0").unwrap(), Some((0, 0)));
        assert_eq!(resolve_user(&r, "root").unwrap(), None);
        assert!(supplementary_groups(&r, 0).unwrap().is_empty());
    }
}

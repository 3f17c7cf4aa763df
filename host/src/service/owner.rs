//! Who may connect to the sockets: the topology file's `user` and `group`, as names (looked
//! up through the system's user database, as `ls -l` does) or as numbers.

use anyhow::{anyhow, Result};
use nix::unistd::{Group, User};

use super::topology_file::{Owner, TopologyFile};

/// The uid and gid to give the sockets; `None` leaves serve's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ids {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Resolves the file's `user` and `group`; an unknown name is an error naming its line.
pub fn resolve(t: &TopologyFile) -> Result<Ids> {
    Ok(Ids {
        uid: t.user.as_ref().map(resolve_user).transpose()?,
        gid: t.group.as_ref().map(resolve_group).transpose()?,
    })
}

fn resolve_user(o: &Owner) -> Result<u32> {
    if let Ok(n) = o.name.parse() {
        return Ok(n);
    }
    match User::from_name(&o.name) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(anyhow!(
            "line {}: there is no user {:?} here",
            o.line,
            o.name
        )),
        Err(e) => Err(anyhow!(
            "line {}: looking up user {:?}: {e}",
            o.line,
            o.name
        )),
    }
}

fn resolve_group(o: &Owner) -> Result<u32> {
    if let Ok(n) = o.name.parse() {
        return Ok(n);
    }
    match Group::from_name(&o.name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(anyhow!(
            "line {}: there is no group {:?} here",
            o.line,
            o.name
        )),
        Err(e) => Err(anyhow!(
            "line {}: looking up group {:?}: {e}",
            o.line,
            o.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(name: &str) -> Owner {
        Owner {
            name: name.into(),
            line: 7,
        }
    }

    #[test]
    fn names_and_numbers_resolve_and_unknown_names_are_errors() {
        // Every Linux system has root (0) in its user and group databases.
        assert_eq!(resolve_user(&owner("root")).unwrap(), 0);
        assert_eq!(resolve_group(&owner("root")).unwrap(), 0);
        assert_eq!(resolve_user(&owner("64055")).unwrap(), 64055);
        assert_eq!(resolve_group(&owner("64055")).unwrap(), 64055);
        let e = resolve_user(&owner("no-such-user-sivshm")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 7: there is no user \"no-such-user-sivshm\" here"
        );
        let e = resolve_group(&owner("no-such-group-sivshm")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 7: there is no group \"no-such-group-sivshm\" here"
        );
    }
}

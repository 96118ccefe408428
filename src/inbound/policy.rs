//! Routes: which rule covers a request (first match in file order, on the normalised path
//! and the method).

use http::Method;

use crate::config::Route;

/// The routes of one configuration, in file order.
#[derive(Debug, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    /// Takes the validated routes as they are; they are already in matching form.
    pub fn new(routes: Vec<Route>) -> Self {
        Routes { routes }
    }

    /// The first route covering `method` on `path` (a normalised match key), if any.
    #[inline]
    pub fn find(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            r.path.matches(path, r.case_insensitive)
                && r.methods.as_ref().is_none_or(|m| m.contains(method))
        })
    }

    /// Every route, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mode, PathMatch, Position, Requirements};

    fn route(name: &str, path: PathMatch, methods: Option<Vec<Method>>, ci: bool) -> Route {
        Route {
            name: name.into(),
            position: Position::default(),
            path,
            methods,
            case_insensitive: ci,
            allow_anonymous: false,
            require: Requirements::default(),
            mode: Mode::Enforce,
        }
    }

    #[test]
    fn first_match_wins_on_path_and_method() {
        let routes = Routes::new(vec![
            route("health", PathMatch::Exact("/healthz".into()), None, false),
            route(
                "admin-write",
                PathMatch::Prefix("/admin".into()),
                Some(vec![Method::POST, Method::DELETE]),
                false,
            ),
            route("legacy", PathMatch::Prefix("/Legacy".into()), None, true),
            route("api", PathMatch::Prefix("/api".into()), None, false),
        ]);
        let find = |m: Method, p: &str| routes.find(&m, p).map(|r| r.name.as_str());
        assert_eq!(find(Method::GET, "/healthz"), Some("health"));
        assert_eq!(find(Method::GET, "/healthz/x"), None);
        assert_eq!(find(Method::POST, "/admin/users"), Some("admin-write"));
        assert_eq!(find(Method::GET, "/admin/users"), None);
        assert_eq!(find(Method::POST, "/administrator"), None);
        assert_eq!(find(Method::GET, "/LEGACY/x"), Some("legacy"));
        assert_eq!(find(Method::GET, "/api"), Some("api"));
        assert_eq!(find(Method::GET, "/API"), None);
    }
}

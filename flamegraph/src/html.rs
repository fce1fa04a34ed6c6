pub fn report(_p: &analysis::Profile, _t: &str, _m: crate::Mode, _i: bool) -> anyhow::Result<String> { todo!() }

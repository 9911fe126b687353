//! Writes the configuration reference generated from template.yaml into
//! `docs/configuration.md`, between its markers (see `devstack::config_doc`).
//! Run it after changing a parameter or a function's environment;
//! `tests/configuration_doc.rs` fails until you do.

use devstack::config_doc;

fn main() {
    let root = devstack::repo_root();
    let page_path = root.join("docs/configuration.md");
    let result = (|| -> Result<bool, String> {
        let template = std::fs::read_to_string(root.join("template.yaml"))
            .map_err(|e| format!("template.yaml: {e}"))?;
        let page = std::fs::read_to_string(&page_path)
            .map_err(|e| format!("{}: {e}", page_path.display()))?;
        let updated = config_doc::splice(&page, &config_doc::render(&template)?)?;
        if updated == page {
            return Ok(false);
        }
        std::fs::write(&page_path, updated).map_err(|e| format!("{}: {e}", page_path.display()))?;
        Ok(true)
    })();
    match result {
        Ok(true) => println!("config-doc: updated {}", page_path.display()),
        Ok(false) => println!("config-doc: {} is up to date", page_path.display()),
        Err(e) => {
            eprintln!("config-doc: {e}");
            std::process::exit(1);
        }
    }
}

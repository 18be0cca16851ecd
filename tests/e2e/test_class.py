"""IngressClass handling: spec.ingressClassName, the legacy kubernetes.io/ingress.class
annotation, other classes ignored, class-less Ingresses only with a default IngressClass
(named like ours) or --watch-ingress-without-class; an IngressClass of our name that names
another controller (spec.controller vs --controller-class) is not served, and says so.
"""

from __future__ import annotations

import pytest

from e2e_lib import (DEFAULT_CLASS, MEASURE_SLACK, RELOAD_SLA, backend_objects, http_path, ingress,
                     ingress_class, rule, wait_until)


@pytest.fixture(scope="module")
def backend_docs(module_env):
    return backend_objects("app", [module_env.echo("app")])


def ing_by_name(name, cls):
    return ingress(name, [rule(None, http_path(f"/{name}", "app", 80))], class_name=cls)


def ing_by_annotation(name, cls):
    return ingress(name, [rule(None, http_path(f"/{name}", "app", 80))], class_name=None, annotation_class=cls)


def ing_classless(name):
    return ingress(name, [rule(None, http_path(f"/{name}", "app", 80))], class_name=None)


def status(router, path):
    return router.curl(path).status


def test_class_selection(env, backend_docs):
    r = env.router({
        "backends.yaml": backend_docs,
        "ingresses.yaml": [
            ing_by_name("by-name", DEFAULT_CLASS),
            ing_by_annotation("by-annotation", DEFAULT_CLASS),
            ing_by_name("other-name", "nginx"),
            ing_by_annotation("other-annotation", "nginx"),
            ing_classless("classless"),
        ],
    })
    assert status(r, "/by-name") == 200
    assert status(r, "/by-annotation") == 200
    assert status(r, "/other-name") == 404, "an Ingress of another class must be ignored"
    assert status(r, "/other-annotation") == 404, "an Ingress annotated with another class must be ignored"
    assert status(r, "/classless") == 404, "a class-less Ingress must be ignored without a default class"


def test_custom_ingress_class_flag(env, backend_docs):
    r = env.router({
        "backends.yaml": backend_docs,
        "ingresses.yaml": [
            ing_by_name("mine", "routing-b"),
            ing_by_annotation("mine-annotated", "routing-b"),
            ing_by_name("default-class", DEFAULT_CLASS),
            ing_classless("classless"),
        ],
    }, ["--ingress-class", "routing-b"])
    assert status(r, "/mine") == 200
    assert status(r, "/mine-annotated") == 200
    assert status(r, "/default-class") == 404, "with --ingress-class routing-b, tandem-router Ingresses are not ours"
    assert status(r, "/classless") == 404


def test_classless_served_with_watch_flag(env, backend_docs):
    r = env.router({
        "backends.yaml": backend_docs,
        "ingresses.yaml": [ing_classless("classless"), ing_by_name("other", "nginx")],
    }, ["--watch-ingress-without-class"])
    assert status(r, "/classless") == 200
    assert status(r, "/other") == 404, "--watch-ingress-without-class must not adopt other classes"


def test_classless_served_with_default_ingressclass(env, backend_docs):
    r = env.router({
        "backends.yaml": backend_docs,
        "class.yaml": ingress_class(DEFAULT_CLASS, default=True),
        "ingresses.yaml": [ing_classless("classless"), ing_by_name("other", "nginx")],
    })
    assert status(r, "/classless") == 200
    assert status(r, "/other") == 404


def test_default_annotation_on_another_class_does_not_count(env, backend_docs):
    r = env.router({
        "backends.yaml": backend_docs,
        "class.yaml": [ingress_class(DEFAULT_CLASS, default=False), ingress_class("nginx", default=True)],
        "ingresses.yaml": [ing_classless("classless")],
    })
    assert status(r, "/classless") == 404


def test_default_ingressclass_added_and_removed_at_runtime(env, backend_docs):
    r = env.router({
        "backends.yaml": backend_docs,
        "ingresses.yaml": [ing_classless("classless")],
    })
    assert status(r, "/classless") == 404
    r.write("class.yaml", ingress_class(DEFAULT_CLASS, default=True))
    elapsed = r.wait_served_by("/classless", "app", timeout=10)
    print(f"default IngressClass added -> class-less Ingress served after {elapsed:.3f}s")
    assert elapsed <= RELOAD_SLA + MEASURE_SLACK
    r.delete("class.yaml")
    wait_until(lambda: status(r, "/classless") == 404, 10, desc="class-less Ingress dropped again")


def test_class_change_on_existing_ingress(env, backend_docs):
    """Re-labelling an Ingress to another class takes it out of this router (and back)."""
    r = env.router({"backends.yaml": backend_docs, "ing.yaml": ing_by_name("moving", DEFAULT_CLASS)})
    assert status(r, "/moving") == 200
    r.write("ing.yaml", ing_by_name("moving", "nginx"))
    wait_until(lambda: status(r, "/moving") == 404, 10, desc="Ingress moved to class nginx is dropped")
    r.write("ing.yaml", ing_by_annotation("moving", DEFAULT_CLASS))
    wait_until(lambda: status(r, "/moving") == 200, 10, desc="Ingress annotated with our class is served again")


def test_ingress_class_of_another_controller_is_not_served(env, backend_docs):
    """Our class name, but its IngressClass names another controller: like ingress-nginx's
    --controller-class, nothing of that class is served, and each Ingress is reported."""
    r = env.router({
        "backends.yaml": backend_docs,
        "class.yaml": ingress_class(DEFAULT_CLASS, default=True, controller="k8s.io/ingress-nginx"),
        "ingresses.yaml": [ing_by_name("by-name", DEFAULT_CLASS), ing_classless("classless")],
    })
    assert status(r, "/by-name") == 404
    assert status(r, "/classless") == 404, "a default class of another controller is not ours either"
    line = r.wait_log("class_controller_mismatch", desc="problem logged for the Ingress")
    assert "by-name" in line and "k8s.io/ingress-nginx" in line, line
    assert "classless" not in line

    # The IngressClass is fixed to name our controller: served, within the reload SLA.
    r.write("class.yaml", ingress_class(DEFAULT_CLASS, default=True))
    wait_until(lambda: status(r, "/by-name") == 200, RELOAD_SLA + MEASURE_SLACK,
               desc="served once the IngressClass names tandem.dev/router")
    assert status(r, "/classless") == 200


def test_controller_class_flag(env, backend_docs):
    manifests = {
        "backends.yaml": backend_docs,
        "class.yaml": ingress_class(DEFAULT_CLASS, controller="example.com/rest-router"),
        "ingresses.yaml": [ing_by_name("by-name", DEFAULT_CLASS)],
    }
    r = env.router(manifests, ["--controller-class", "example.com/rest-router"])
    assert status(r, "/by-name") == 200
    other = env.router(manifests)  # default --controller-class tandem.dev/router
    assert status(other, "/by-name") == 404

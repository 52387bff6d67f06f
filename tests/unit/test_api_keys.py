"""The keys collection, keyname on create, and image facts, through the API over an in-process schedd."""
import json
import xml.etree.ElementTree as ET

from conftest import JSON, XML


def make_key(c, name: str = "laptop", **data) -> dict:
    r = c.post("/api/keys", data={"name": name, **data}, headers=JSON)
    assert r.status_code == 201, r.text
    return r.json()["key"]


def test_a_created_key_is_answered_with_its_location_and_its_private_half_once(alice):
    r = alice.post("/api/keys", data={"name": "laptop"}, headers=XML)
    assert r.status_code == 201 and r.headers["Location"].endswith("/api/keys/laptop")
    created = ET.fromstring(r.content)
    assert created.get("type") == "key" and created.findtext("pem").startswith("-----BEGIN OPENSSH PRIVATE KEY")
    shown = ET.fromstring(alice.get("/api/keys/laptop", headers=XML).content)
    assert shown.find("pem") is None and shown.findtext("fingerprint") == created.findtext("fingerprint")


def test_another_users_keys_are_404_and_never_listed(alice, bob):
    make_key(alice)
    assert bob.get("/api/keys/laptop", headers=XML).status_code == 404
    assert bob.delete("/api/keys/laptop").status_code == 404
    assert bob.get("/api/keys", headers=JSON).json() == {"keys": []}
    assert [k["id"] for k in alice.get("/api/keys", headers=JSON).json()["keys"]] == ["laptop"]


def test_two_users_may_each_have_a_key_of_the_same_name(alice, bob):
    assert make_key(alice)["public_key"] != make_key(bob)["public_key"]


def test_a_deleted_key_is_gone(alice):
    make_key(alice)
    assert alice.delete("/api/keys/laptop").status_code == 204
    assert alice.get("/api/keys/laptop", headers=XML).status_code == 404


def test_an_instance_launched_with_a_key_shows_it_and_its_job_holds_the_public_half(alice, schedd):
    key = make_key(alice)
    r = alice.post("/api/instances", data={"image_id": "tiny.img", "keyname": "laptop"}, headers=XML)
    assert r.status_code == 201, r.text
    doc = ET.fromstring(r.content)
    assert doc.find("authentication").get("type") == "key"
    assert doc.findtext("authentication/login/keyname") == "laptop"
    [ad] = schedd.jobs.values()
    assert ad["CloudPublicKey"] == key["public_key"] and ad["CloudKeyName"] == "laptop"


def test_a_key_of_another_user_cannot_be_launched_with(alice, bob, schedd):
    make_key(alice)
    r = bob.post("/api/instances", data={"image_id": "tiny.img", "keyname": "laptop"}, headers=XML)
    assert r.status_code == 400 and "not one of your keys" in r.text
    assert schedd.jobs == {}


def test_the_entry_point_advertises_keys_and_the_features_that_work(anonymous):
    links = anonymous.get("/api", headers=JSON).json()["api"]["links"]
    instances = next(link for link in links if link["rel"] == "instances")
    assert {f["name"] for f in instances["features"]} == {"user_data", "user_name", "authentication_key"}
    assert "keys" in {link["rel"] for link in links}


def test_the_keys_page_imports_a_key_and_the_launch_form_offers_it(alice, app):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    line = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    make_key(alice, "desk", public_key=line)
    page = alice.get("/api/keys?format=html").text
    assert 'id="key-desk"' in page and 'id="add-key"' in page
    images = alice.get("/api/images?format=html").text
    assert '<option value="desk">key desk</option>' in images


def test_an_image_shows_its_sidecar_facts(alice, shared_images):
    (shared_images / "tiny.img.json").write_text(json.dumps(
        {"name": "Tiny", "login_user": "root", "min_memory_mib": 128, "cloud_init": False}))
    image = alice.get("/api/images/tiny.img", headers=JSON).json()["image"]
    assert (image["name"], image["login_user"], image["min_memory_mib"], image["cloud_init"]) == \
        ("Tiny", "root", 128, "false")
    doc = ET.fromstring(alice.get("/api/images/tiny.img", headers=XML).content)
    assert doc.findtext("login_user") == "root" and doc.findtext("name") == "Tiny"

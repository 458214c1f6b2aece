def test_trained_model_fixture_registers_champion(trained_model):
    assert trained_model.version == "1"
    assert (trained_model.artefact / "model.joblib").is_file()
    assert trained_model.contract.model.version == "1"

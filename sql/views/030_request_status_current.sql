-- View: request_status_current. Grain: one row per request, status as of the data horizon.
CREATE OR REPLACE VIEW request_status_current AS
SELECT * FROM request_status_as_of((SELECT horizon FROM data_horizon));

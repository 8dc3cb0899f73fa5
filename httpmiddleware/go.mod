module github.com/rbee-hive/rbee-hive/httpmiddleware

go 1.26

module example.com/atomix/drivers/echo

go 1.19

require example.com/atomix/sdk v1.1.0

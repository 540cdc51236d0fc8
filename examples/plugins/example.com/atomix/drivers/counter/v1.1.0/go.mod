module example.com/atomix/drivers/counter

go 1.19

require example.com/atomix/sdk v1.2.0

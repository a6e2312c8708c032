// Which commit runs DuckDB's checkpoint: batches of 2,048 usage rows (the
// generations table's columns), each followed by a one-row insert as a
// request's own write would be; prints every commit that ran a checkpoint or
// took over 20 ms, and the worst of each kind (ADR-0037).
//
//   D=$(ls -d $CARGO_TARGET_DIR/duckdb-sources/*/duckdb)
//   L=$(ls -d $CARGO_TARGET_DIR/release/build/libduckdb-sys-*/out)
//   gcc -O2 bench/slices/checkpoint.c -I$D/src/include -L$L -lduckdb -lstdc++ -lpthread -ldl -lm -o /tmp/checkpoint
//   rm -f /tmp/ck.db*; /tmp/checkpoint /tmp/ck.db 150                  # DuckDB's threshold (16 MB)
//   rm -f /tmp/ck.db*; /tmp/checkpoint /tmp/ck.db 150 4MB              # another threshold
//   rm -f /tmp/ck.db*; /tmp/checkpoint /tmp/ck.db 150 64MB 16777216    # ADR-0037: CHECKPOINT after
//                                                                     # a batch once the WAL has 16 MiB
#include <duckdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e3+t.tv_nsec/1e6;}
static long fsize(const char*p){struct stat s;return stat(p,&s)?-1:s.st_size;}
#define Q(c,s) do{ if(duckdb_query(c,s,NULL)==DuckDBError){fprintf(stderr,"fail %s\n",s);exit(1);} }while(0)
int main(int argc,char**argv){
  const char*path=argv[1]; int batches=atoi(argv[2]); const char*thr=argc>3?argv[3]:NULL;
  char wal[512]; snprintf(wal,sizeof wal,"%s.wal",path);
  duckdb_database db; duckdb_connection c;
  duckdb_config cfg; duckdb_create_config(&cfg); duckdb_set_config(cfg,"threads","1");
  if(duckdb_open_ext(path,&db,cfg,NULL)==DuckDBError){fprintf(stderr,"open\n");return 1;}
  duckdb_connect(db,&c);
  if(thr){char s[128];snprintf(s,sizeof s,"SET checkpoint_threshold='%s'",thr);Q(c,s);}
  Q(c,"CREATE TABLE IF NOT EXISTS generations (id VARCHAR NOT NULL, user_id VARCHAR NOT NULL, kind VARCHAR NOT NULL, model_requested VARCHAR NOT NULL, model_served VARCHAR, status VARCHAR NOT NULL, prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, cost_nanousd BIGINT NOT NULL, latency_ms BIGINT NOT NULL, error VARCHAR, summary VARCHAR NOT NULL, conversation_id VARCHAR, media_ids VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL)");
  Q(c,"CREATE TABLE IF NOT EXISTS messages (id VARCHAR PRIMARY KEY, body VARCHAR)");
  long n=0; double worst_b=0,worst_r=0;
  for(int b=0;b<batches;b++){
    double t0=now(); long w0=fsize(wal);
    Q(c,"BEGIN");
    duckdb_appender a; duckdb_appender_create(c,NULL,"generations",&a);
    for(int i=0;i<2048;i++,n++){
      char id[64]; snprintf(id,sizeof id,"0192f0a0-0000-7000-8000-%012ld",n);
      duckdb_append_varchar(a,id); duckdb_append_varchar(a,"0192f0a0-1111-7000-8000-000000000001");
      duckdb_append_varchar(a,"chat"); duckdb_append_varchar(a,"atelier/chat-default"); duckdb_append_varchar(a,"openai/gpt-4o-mini");
      duckdb_append_varchar(a,"succeeded"); duckdb_append_int64(a,12); duckdb_append_int64(a,40+n%50); duckdb_append_int64(a,n*7%100000);
      duckdb_append_int64(a,20+n%3); duckdb_append_null(a); duckdb_append_varchar(a,"Say something about the weather today in a few words please");
      duckdb_append_null(a); duckdb_append_varchar(a,""); duckdb_append_timestamp(a,(duckdb_timestamp){1764633600000000LL+n*200});
      duckdb_appender_end_row(a);
    }
    duckdb_appender_flush(a); duckdb_appender_destroy(&a);
    double t1=now(); Q(c,"COMMIT"); double t2=now(); long w1=fsize(wal);
    if(argc>4 && fsize(wal)>=atol(argv[4])){ double c0=now(); Q(c,"CHECKPOINT"); printf("batch %d: explicit checkpoint %.1f ms\n",b,now()-c0); }
    // a request's one-row write
    char s[200]; snprintf(s,sizeof s,"INSERT INTO messages VALUES ('m%d','a question')",b);
    double t3=now(); Q(c,s); double t4=now(); long w2=fsize(wal);
    if(t2-t1>worst_b)worst_b=t2-t1; if(t4-t3>worst_r)worst_r=t4-t3;
    if(w1<w0||w2<w1||t2-t1>20||t4-t3>20) printf("batch %d rows %ld: append %.1f commit %.1f ms (wal %ld->%ld), request %.1f ms (wal ->%ld)\n",b,n,t1-t0,t2-t1,w0,w1,t4-t3,w2);
  }
  printf("done: %ld rows, worst batch commit %.1f ms, worst request write %.1f ms, db %ld bytes\n",n,worst_b,worst_r,fsize(path));
  duckdb_disconnect(&c); duckdb_close(&db); return 0;
}
